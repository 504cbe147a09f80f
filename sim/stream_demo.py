"""cocotb: stream all-MiniLM-L6-v2 encoder layers through the SmartQuantController and run the model on them.

Run by smartquant.commands.demo_streaming.run_demo_streaming (or tests/test_streaming.py) through
smartquant.scripts.bench_device.simulate. Settings: SQ_PARAMS, SQ_SEED and SQ_STREAM_CONFIG, a JSON object
{format, layers, ks, policies, budget, view, R, rule, out, [matrices], [sentences]} (workloads/streaming.py
demo_config; `matrices` limits the streamed matrices to some short names, `sentences` replaces the demo
sentences: both for quick tests).

1. Load: the layers' weights go in through the CXL.mem weight-major write path (MemWr on view 1), one region per
   layer (workloads/streaming.py StreamingPlan). The TB's scoreboard checks every NDR against the golden
   DeviceModel.
2. Runs: for every static k and every policy, counters are cleared over CSR, then the host loop streams the
   layers in workloads/streaming.py's prefetch order (layer n+1's reads are queued before layer n's numpy
   forward runs; a per-input policy fetches on demand). Each DRS payload is captured by tag, decoded with
   StreamingPlan.decode_packed and fed into the numpy layer forward. Checks: decoded weights == the golden
   weights (quant's arithmetic read) bit for bit, layer outputs and sentence embeddings == golden_forward
   exactly, every DRS bit-exact against the DeviceModel (scoreboard) and every counter read over CSR after each
   layer equal to the model's.
3. Accounting: hardware counters (read over AXI-Lite) per layer and per run; the AXI AR (and AW) address streams
   recorded by a monitor go through golden/dram.py's RowModel for activates; golden/energy.py gives energy.
The result JSON (and an .npz of every DRS payload, per run and matrix) goes to config["out"].
"""
from __future__ import annotations

import json
import os
import sys
import time

import cocotb
import numpy as np

from smartquant.workloads import streaming
from smartquant.golden.dram import RowModel
from smartquant.workloads.minilm import LAYER_MATRICES, cosine, load_minilm
from smartquant.workloads.sweep import SENTENCES, single_blas_thread
from smartquant.hdl.cxl.messages import drs_layout
from smartquant.params import (
    CONTROL_CLEAR_COUNTERS, CSR_CONTROL, ControllerParams, DrsOpcode, View, counter_name,
)
from smartquant.sim.tb import TB, RegionSetup


# --- monitors shared with sim/device_bench.py ---------------------------------------------------------------
class AddressMonitor:
    """Records every AXI burst of one channel ("ar": reads, "aw": writes) the testbench's AXI memory took from the
    controller: (cycle, first line, beats)."""

    def __init__(self, tb: TB, channel: str):
        self.tb = tb
        self.line_bytes = tb.params.line_bytes
        self.bursts: list[tuple[int, int, int]] = []
        tb.burst_listeners[channel].append(self._record)

    def _record(self, address: int, beats: int) -> None:
        self.bursts.append((self.tb.cycles, address // self.line_bytes, beats))

    def clear(self) -> None:
        self.bursts.clear()

    def lines(self, start: int = 0) -> np.ndarray:
        """Line address of every beat of bursts[start:], in issue order."""
        runs = [np.arange(line, line + beats, dtype=np.int64) for _, line, beats in self.bursts[start:]]
        return np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)


class DrsCapture:
    """Wraps the TB's DRS sink callback: payload lines of chosen tags go into numpy rows before scoring."""

    def __init__(self, tb: TB):
        self.tb = tb
        fields = {name: field for name, field in drs_layout(tb.params)}
        self.tag_offset = fields["tag"].offset
        self.data_offset = fields["data"].offset
        self.opcode_offset = fields["opcode"].offset
        self.poison_offset = fields["poison"].offset
        self.line_bytes = tb.params.line_bytes
        self.data_mask = (1 << tb.params.data_width) - 1
        self.targets: dict[int, tuple[np.ndarray, int]] = {}
        self.bad: list[str] = []
        self.received = 0
        self.last_cycle = 0
        self._score = tb.drs_sink.callback
        tb.drs_sink.callback = self._on_drs

    def expect(self, tag: int, rows: np.ndarray, row: int) -> None:
        self.targets[tag] = (rows, row)

    def _on_drs(self, payload: int) -> None:
        self.received += 1
        self.last_cycle = self.tb.cycles
        tag = (payload >> self.tag_offset) & 0xFFFF
        target = self.targets.pop(tag, None)
        if target is not None:
            rows, row = target
            opcode = (payload >> self.opcode_offset) & 0b111
            poison = (payload >> self.poison_offset) & 1
            if opcode != DrsOpcode.MEM_DATA or poison:
                self.bad.append(f"tag {tag:#x}: opcode {opcode}, poison {poison}")
            data = (payload >> self.data_offset) & self.data_mask
            rows[row] = np.frombuffer(data.to_bytes(self.line_bytes, "little"), dtype=np.uint8)
        self._score(payload)


def settings() -> tuple[ControllerParams, int, dict]:
    params = ControllerParams(**json.loads(os.environ.get("SQ_PARAMS", "{}")))
    config = json.loads(os.environ.get("SQ_STREAM_CONFIG", "{}"))
    return params, int(os.environ.get("SQ_SEED", "1")), config


# --- the host side of the demo ------------------------------------------------------------------------------
class StreamingHost:
    """The host: loads the plan's layers, then streams them at a schedule and runs the model on them."""

    def __init__(self, tb: TB, plan: streaming.StreamingPlan, view: str, load_view: str = "weight-major"):
        self.tb = tb
        self.load_view = load_view
        self.plan = plan
        self.view = streaming.check_view(view)
        self.capture = DrsCapture(tb)
        self.ar = AddressMonitor(tb, "ar")
        self.aw = AddressMonitor(tb, "aw")
        self.region_k: dict[int, tuple] = {}         # region-table entry -> (layer, default k) programmed
        self.issued = 0
        self.label = ""
        self.payloads: dict[str, np.ndarray] = {}    # "run|matrix|k" -> DRS data lines, in read order

    async def program(self, layer: int, default_k: int) -> None:
        region = self.plan.regions[layer]
        if self.region_k.get(region.index) == (layer, default_k):
            return
        await self.tb.program_region(RegionSetup(region.index, region.base_line, region.n_superblocks, region.B,
                                                 region.R, default_k, region.fmt,
                                                 streaming.RULE_ROUNDING[self.plan.rule]))
        self.region_k[region.index] = (layer, default_k)

    async def load(self) -> dict:
        """MemWr of every planned matrix (weight-major, or raw lines from the host-side encoder); returns the
        load's counters, cycles and activates."""
        await self.clear_counters()
        start, writes = self.tb.cycles, 0
        raw = self.load_view == "raw"
        view = View.RAW if raw else View.WEIGHT_MAJOR
        for layer in self.plan.layers:
            await self.program(layer, self.plan.B)
            for name in self.plan.names(layer):
                lines, data = self.plan.raw_writes(name) if raw else self.plan.weight_major_writes(name)
                for line, row in zip(lines.tolist(), data):
                    self.tb.write(view, line, int.from_bytes(row.tobytes(), "little"))
                writes += len(lines)
            await self.wait()
        counters = await self.tb.check_counters()
        activates = RowModel().replay(self.aw.lines()).activates
        return {"view": self.load_view, "rwd": writes, "cycles": self.tb.cycles - start, "activates": activates,
                "counters": {counter_name(n): v for n, v in enumerate(counters)}}

    async def wait(self) -> None:
        """Until every queued request is answered (the timeout grows with what is queued), with a progress bar."""
        tb = self.tb
        queued = len(tb.outstanding)
        if queued > 2000 and os.environ.get("SQ_PROGRESS", "1") == "1":
            from tqdm import tqdm
            with tqdm(total=queued, desc=self.label or "load", unit="msg", file=sys.stderr, leave=False) as bar:
                limit = tb.cycles + 100 * queued + 20_000
                while tb.outstanding and tb.cycles < limit:
                    await tb.driver.cycles(1024)
                    bar.update(queued - len(tb.outstanding) - bar.n)
        await tb.quiesce(timeout_cycles=100 * len(tb.outstanding) + 20_000)

    async def clear_counters(self) -> None:
        await self.tb.csr_write(CSR_CONTROL, CONTROL_CLEAR_COUNTERS | int(self.tb.nxm_as_poison))
        self.ar.clear()
        self.aw.clear()

    async def issue(self, name: str, precision_k: int) -> tuple:
        """Queue the packed reads of a matrix at k (programming the default k first in the default view)."""
        placement = self.plan.placements[name]
        if self.view == "default":
            if self.region_k.get(self.plan.region_of(name).index) != (placement.layer, precision_k):
                await self.wait()                  # CSR writes happen with nothing in flight
            await self.program(placement.layer, precision_k)
        else:
            await self.program(placement.layer, self.plan.B)
        lines = self.plan.packed_read_lines(name, precision_k)
        rows = np.zeros((lines.size, self.tb.params.line_bytes), dtype=np.uint8)
        view = self.plan.view_of(self.view)
        for row, line in enumerate(lines.tolist()):
            tag = self.tb.read(view, line, precision_k if view == View.PACKED_K else 0)
            self.capture.expect(tag, rows, row)
        self.issued += lines.size
        return name, precision_k, rows

    def collect(self, fetches, fetched: dict) -> None:
        assert not self.capture.bad, "DRS with NXM or poison while streaming: " + "; ".join(self.capture.bad[:5])
        for name, precision_k, rows in fetches:
            self.payloads[f"{self.label}|{name}|k={precision_k}"] = rows
            n_blocks = self.plan.placements[name].n_blocks
            fetched[(name, precision_k)] = self.plan.decode_packed(
                name, precision_k, rows.reshape(n_blocks, precision_k, -1))

    async def account(self, layer: int, state: dict) -> dict:
        """Counters (checked against the model) and activates since the previous account of this run."""
        counters = await self.tb.check_counters()
        delta = {counter_name(n): counters[n] - state["counters"][n] for n in range(len(counters))}
        activates = state["rows"].replay(self.ar.lines(state["bursts"])).activates
        state["counters"], state["bursts"] = counters, len(self.ar.bursts)
        return {"layer": layer, "counters": delta, "activates": activates,
                "energy": streaming.energy_split(delta, activates, state["tokens"])}

    async def stream(self, label: str, batch, choose, per_matrix_k: dict | None) -> dict:
        """One streaming run. per_matrix_k given -> prefetch a layer ahead; None -> fetch on demand (choose(x))."""
        plan, model, tb = self.plan, self.plan.model, self.tb
        self.label = label
        await self.clear_counters()
        state = {"counters": [0] * 64, "bursts": 0, "rows": RowModel(), "tokens": int(batch.attention_mask.sum())}
        start_cycle = tb.cycles
        fetched, per_layer, chosen_all = {}, [], {}
        streamed = list(plan.layers)
        hidden = model.embed(batch)
        if per_matrix_k is not None:
            first = streamed[0]
            pending = [await self.issue(name, per_matrix_k[name]) for name in plan.names(first)]
            await self.wait()
            self.collect(pending, fetched)
            per_layer.append(await self.account(first, state))
        outputs = {}
        for layer in range(model.n_layers):
            if layer not in plan.layers:
                hidden = model.layer(layer, hidden, batch.attention_mask)
                continue
            if per_matrix_k is not None:
                position = streamed.index(layer)
                following = streamed[position + 1] if position + 1 < len(streamed) else None
                pending = []
                if following is not None:        # prefetch: queued before this layer's forward runs
                    pending = [await self.issue(name, per_matrix_k[name]) for name in plan.names(following)]
                hidden, chosen = streaming.run_layer(model, layer, hidden, batch.attention_mask, choose, fetched,
                                                     plan.placements)
                if following is not None:
                    await self.wait()
                    self.collect(pending, fetched)
                    per_layer.append(await self.account(following, state))
            else:
                while True:
                    try:
                        hidden_next, chosen = streaming.run_layer(model, layer, hidden, batch.attention_mask,
                                                                  choose, fetched, plan.placements)
                        break
                    except streaming.WeightsNeeded as need:
                        pending = [await self.issue(need.name, need.precision_k)]
                        await self.wait()
                        self.collect(pending, fetched)
                hidden = hidden_next
                per_layer.append(await self.account(layer, state))
            chosen_all.update(chosen)
            outputs[layer] = hidden
        cycles = tb.cycles - start_cycle
        embeddings = model.pool(hidden, batch.attention_mask)
        return self._summarise(label, batch, choose, fetched, chosen_all, outputs, embeddings, per_layer, cycles)

    def _summarise(self, label, batch, choose, fetched, chosen, outputs, embeddings, per_layer, cycles) -> dict:
        plan, model = self.plan, self.plan.model
        wrong_weights = [f"{name} k={k}" for (name, k), weights in fetched.items()
                         if not np.array_equal(weights.view(np.uint32),
                                               plan.golden_weights(name, k).view(np.uint32))]
        golden_embeddings, golden_outputs, golden_chosen = streaming.golden_forward(plan, batch, choose)
        wrong_outputs = [layer for layer in outputs if not np.array_equal(outputs[layer], golden_outputs[layer])]
        exact = not wrong_weights and not wrong_outputs and np.array_equal(embeddings, golden_embeddings) \
            and chosen == golden_chosen
        reference = model.pool(model.hidden_states(batch)[-1], batch.attention_mask)
        cosines = cosine(embeddings, reference)
        totals = {name: sum(entry["counters"][name] for entry in per_layer) for name in per_layer[0]["counters"]}
        activates = sum(entry["activates"] for entry in per_layer)
        full_lines = sum(p.n_blocks for p in plan.placements.values()) * plan.B
        bits = sum(plan.placements[name].n_weights * k for name, k in chosen.items()) / plan.n_weights()
        return {
            "label": label, "layers": list(plan.layers), "k": chosen, "bits_per_weight": bits,
            "embedding_cos_mean": float(cosines.mean()), "embedding_cos_min": float(cosines.min()),
            "counters": totals, "activates": activates, "traffic_ratio": totals["dram_lines_read"] / full_lines,
            "link_bytes": totals["drs_sent"] * self.tb.params.line_bytes, "cycles": cycles,
            "energy": streaming.energy_split(totals, activates, int(batch.attention_mask.sum())),
            "per_layer": per_layer, "exact": bool(exact), "wrong_weights": wrong_weights[:10],
            "wrong_layer_outputs": wrong_outputs,
        }


def policy_schedules(config: dict, plan: streaming.StreamingPlan, batch) -> list:
    """(label, choose, per_matrix_k or None) of every static k and policy the config asks for."""
    schedules = [(f"static k={k}", streaming.static_choice(k), {name: k for name in plan.names()})
                 for k in config["ks"]]
    if not config["policies"]:
        return schedules
    from smartquant.workloads import policies
    from smartquant.workloads.sweep import prepare
    if any(len(plan.regions[layer].matrices) != len(LAYER_MATRICES) for layer in plan.layers):
        raise AssertionError("policies are fitted on whole layers: do not restrict `matrices` with policies")
    layers = list(plan.layers)
    calibration = prepare(policies.CALIBRATION_SENTENCES, plan.model, layers=layers)
    calibration._stored[plan.fmt_name] = {name: plan.stored[name] for name in calibration.names}
    names = [name for name in calibration.names if name in plan.placements]
    budget = config["budget"]
    if "greedy" in config["policies"]:
        nsr = policies.output_nsr(calibration, plan.fmt_name, plan.rule)
        sizes = {name: plan.model.weights[name].size for name in names}
        allocation = policies.greedy_allocation({n: nsr[n] for n in names}, sizes, budget, plan.B)
        schedules.append((f"greedy {budget:g} b/w", lambda name, x, a=allocation: a[name], allocation))
    if "activation" in config["policies"]:
        activation = policies.ActivationPolicy.fit_tables(calibration, plan.fmt_name, plan.rule)
        activation.calibrate(calibration, budget)
        schedules.append((f"activation {budget:g} b/w", streaming.activation_choice(activation, batch.attention_mask),
                          None))
    return schedules


@cocotb.test()
async def test_stream_minilm(dut):
    """Load MiniLM layer(s) through the write path, stream them at every schedule, check, account, record."""
    params, seed, config = settings()
    wall_start = time.monotonic()
    tb = TB(dut, params, seed)
    await tb.reset()
    model = load_minilm()
    plan = streaming.StreamingPlan(model, params, config["format"], config["layers"], config["R"], config["rule"],
                                   matrices=config.get("matrices"))
    batch = model.tokenize(list(config.get("sentences") or SENTENCES))
    host = StreamingHost(tb, plan, config["view"], config.get("load_view", "weight-major"))
    tb.scoreboard.record = False
    with single_blas_thread():
        load = await host.load()
        dut._log.info("loaded %d weight-major lines in %d cycles", load["rwd"], load["cycles"])
        runs = []
        for label, choose, per_matrix_k in policy_schedules(config, plan, batch):
            run = await host.stream(label, batch, choose, per_matrix_k)
            dut._log.info("%s: %.3f bits/weight, embedding cosine %.5f, exact %s, %d cycles", label,
                          run["bits_per_weight"], run["embedding_cos_mean"], run["exact"], run["cycles"])
            runs.append(run)
        await tb.finish()
    wall = time.monotonic() - wall_start
    result = {
        "config": config, "params": params.as_dict(), "seed": seed, "sentences": len(batch),
        "tokens": int(batch.attention_mask.sum()), "n_weights": plan.n_weights(), "load": load, "runs": runs,
        "speed": {"cycles": tb.cycles, "wall_seconds": wall, "cycles_per_second": tb.cycles / wall,
                  "transactions": host.issued + load["rwd"],
                  "transactions_per_second": (host.issued + load["rwd"]) / wall},
        "scoreboard": {"drs_checked": tb.scoreboard.stats.checked_drs, "ndr_checked": tb.scoreboard.stats.checked_ndr,
                       "mismatches": tb.scoreboard.stats.mismatches},
    }
    out = config.get("out")
    if out:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
        np.savez(os.path.splitext(out)[0] + ".npz", **host.payloads)
    bad = [run["label"] for run in runs if not run["exact"]]
    assert not bad, f"RTL-streamed weights or outputs differ from the golden model in runs {bad}: " + "; ".join(
        f"{run['label']}: weights {run['wrong_weights']}, layers {run['wrong_layer_outputs']}" for run in runs
        if not run["exact"])
