"""Every command that builds the controller takes the same ControllerParams options (smartquant/commands/
parameters.py): named after the fields, each reaching its field, with ControllerParams' checks as clear errors."""
import dataclasses

import pytest

from smartquant.cli import build_parser
from smartquant.errors import SmartquantError
from smartquant.commands.parameters import option_name, params_from_options
from smartquant.params import ControllerParams

FIELDS = [field.name for field in dataclasses.fields(ControllerParams)]


@pytest.mark.parametrize("command", ["verilog", "sim"])
def test_every_field_is_an_option_named_after_it(command):
    parser = build_parser()
    for name in FIELDS:
        value = getattr(ControllerParams(), name)
        value = value + 1 if name == "n_regions" else value     # a value other than the default reaches the field
        args = parser.parse_args([command, option_name(name), str(value)])
        assert getattr(args, name) == value, name
    assert option_name("n_regions") == "--n-regions"


def test_old_option_spelling_still_accepted():
    assert build_parser().parse_args(["verilog", "--regions", "3"]).n_regions == 3


def test_bad_parameters_are_clear_errors():
    args = build_parser().parse_args(["verilog", "--data-width", "100"])
    with pytest.raises(SmartquantError, match="data_width"):
        params_from_options(args)
