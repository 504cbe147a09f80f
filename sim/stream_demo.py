"""cocotb: stream transformer layers through the SmartQuantController and run the model on what comes out.

One host for both workloads of workloads/stream_workloads.py: all-MiniLM-L6-v2 (embedding cosine) and
SmolLM2-135M (perplexity). Run by smartquant.commands.demo_streaming.run_demo_streaming (or tests/test_streaming.py)
through smartquant.scripts.bench_device.simulate. Settings: SQ_PARAMS, SQ_SEED and SQ_STREAM_CONFIG, a JSON object
{workload, format, layers, ks, policies, budget, view, R, rule, corrected, load_view, out, [per_matrix],
[matrices], [sentences], [windows, window]} (smartquant/commands/demo_streaming.py demo_config): `schedules` are
SmolLM2's per-matrix run {spec} (stream_workloads.smollm2_layer_precisions), `policies` MiniLM's fitted
policies; `matrices` limits the streamed matrices to some short names, `sentences` replaces MiniLM's demo sentences,
`windows` x `window` are SmolLM2's perplexity tokens (both for quick tests).

1. Load: the layers' weights go in over CXL.mem (MemWr on the raw view from the host's bit-plane encoder, or on
   the weight-major view), one region per layer (workloads/streaming.py StreamingPlan). The TB's scoreboard
   checks every NDR against the golden DeviceModel.
2. Runs: for every static k and every schedule or policy, counters are cleared over CSR, the layers' packed
   reads are issued layer by layer (a per-input policy fetches on demand, as its forward asks), each DRS
   payload is captured by tag and decoded with StreamingPlan.decode_packed, and the model's forward runs with
   those weights (streaming.forward_with). Checks: decoded weights == the golden weights (quant's arithmetic
   read) bit for bit, the forward's outputs (MiniLM: every layer output and the embeddings; SmolLM2: every
   token's NLL, hence the perplexity) == the golden forward's exactly, every DRS bit-exact against the
   DeviceModel (scoreboard) and every counter read over CSR after each layer equal to the model's.
3. Accounting: hardware counters (read over AXI-Lite) per layer and per run; the AXI AR (and AW) address streams
   recorded by a monitor go through golden/dram.py's RowModel for activates; golden/energy.py gives energy.
The result JSON (and an .npz of every DRS payload, per run and matrix) goes to config["out"].

test_stream_kv (smartquant demo --model smollm2 --kv): one SmolLM2 layer's KV cache instead of weights,
KVStreamingHost below; SQ_STREAM_CONFIG {workload: "smollm2-kv", layer, windows, window, weights, runs: [{format,
fill, policy}], out} (demo_streaming.kv_config). The regions, writes, reads and decoding are workloads/kv_cache.py
KVDeviceLayer; the checks are the same scoreboard and counters plus the token NLLs against the golden KV model.
"""
from __future__ import annotations

import json
import os
import sys
import time

import cocotb
import numpy as np

from smartquant.golden.dram import RowModel
from smartquant.workloads import streaming
from smartquant.workloads.minilm import single_blas_thread
from smartquant.workloads.stream_workloads import MiniLMWorkload, SmolLM2Workload
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
    """The host: loads the plan's layers, then streams them at a schedule and runs the workload's model on them."""

    def __init__(self, tb: TB, plan: streaming.StreamingPlan, workload, view: str, load_view: str = "weight-major"):
        self.tb = tb
        self.load_view = load_view
        self.plan = plan
        self.workload = workload
        self.view = streaming.check_view(view)
        self.capture = DrsCapture(tb)
        self.ar = AddressMonitor(tb, "ar")
        self.aw = AddressMonitor(tb, "aw")
        self.region_k: dict[int, tuple] = {}         # region-table entry -> (layer, base line, default k, rule)
        self.issued = 0
        self.label = ""
        self.payloads: dict[str, np.ndarray] = {}    # "run|matrix|k" -> DRS data lines, in read order

    async def program(self, layer: int, default_k: int) -> None:
        await self.program_region(self.plan.regions[layer], default_k, self.plan.rule)

    async def program_region(self, region: streaming.LayerRegion, default_k: int, rule: str) -> None:
        """Point the region's table entry at it (skipped when the entry already holds it with this k and rule)."""
        if self.region_k.get(region.index) == (region.layer, region.base_line, default_k, rule):
            return
        await self.tb.program_region(RegionSetup(region.index, region.base_line, region.n_superblocks, region.B,
                                                 region.R, default_k, region.fmt, streaming.RULE_ROUNDING[rule]))
        self.region_k[region.index] = (region.layer, region.base_line, default_k, rule)

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
            region = self.plan.region_of(name)
            if self.region_k.get(region.index) != (placement.layer, region.base_line, precision_k, self.plan.rule):
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

    async def fetch(self, layer: int, wanted: list, fetched: dict, state: dict) -> None:
        """Issue the packed reads of (name, k) pairs of one layer, wait, decode, account them to the layer."""
        pending = [await self.issue(name, k) for name, k in wanted]
        await self.wait()
        self.collect(pending, fetched)
        counters = await self.tb.check_counters()       # every counter against the model
        activates = state["rows"].replay(self.ar.lines(state["bursts"])).activates
        entry = state["per_layer"].setdefault(layer, {"layer": layer, "counters": {}, "activates": 0})
        for n, value in enumerate(counters):
            name = counter_name(n)
            entry["counters"][name] = entry["counters"].get(name, 0) + value - state["counters"][n]
        entry["activates"] += activates
        state["counters"], state["bursts"] = counters, len(self.ar.bursts)

    async def stream(self, label: str, choose, per_matrix_k: dict | None, model_bits: float | None = None) -> dict:
        """One streaming run. per_matrix_k given: every layer's reads are issued before the forward runs;
        None (a per-input policy): fetched on demand, as the forward asks for them (streaming.WeightsNeeded)."""
        plan, workload, tb = self.plan, self.workload, self.tb
        self.label = label
        workload.begin_run()
        await self.clear_counters()
        state = {"counters": [0] * 64, "bursts": 0, "rows": RowModel(), "per_layer": {}}
        start_cycle = tb.cycles
        fetched = {}
        if per_matrix_k is not None:
            for layer in plan.layers:
                await self.fetch(layer, [(name, per_matrix_k[name]) for name in plan.names(layer)], fetched, state)
        while True:
            try:
                outputs, chosen = streaming.forward_with(workload, plan, workload.inputs, choose, fetched)
                break
            except streaming.WeightsNeeded as need:
                await self.fetch(plan.placements[need.name].layer, [(need.name, need.precision_k)], fetched, state)
        cycles = tb.cycles - start_cycle
        return self._summarise(label, choose, fetched, chosen, outputs, state, cycles, model_bits)

    def _summarise(self, label, choose, fetched, chosen, outputs, state, cycles, model_bits) -> dict:
        plan, workload = self.plan, self.workload
        tokens = workload.tokens()
        wrong_weights = [f"{name} k={k}" for (name, k), weights in fetched.items()
                         if not np.array_equal(weights.view(np.uint32),
                                               plan.golden_weights(name, k).view(np.uint32))]
        golden_outputs, golden_chosen = streaming.golden_forward(workload, plan, workload.inputs, choose)
        wrong_outputs = streaming.outputs_equal(outputs, golden_outputs)
        exact = not wrong_weights and not wrong_outputs and chosen == golden_chosen
        per_layer = [state["per_layer"][layer] for layer in plan.layers if layer in state["per_layer"]]
        for entry in per_layer:
            entry["energy"] = streaming.energy_split(entry["counters"], entry["activates"], tokens)
        totals = {name: sum(entry["counters"][name] for entry in per_layer) for name in per_layer[0]["counters"]}
        activates = sum(entry["activates"] for entry in per_layer)
        bits = sum(plan.placements[name].n_weights * k for name, k in chosen.items()) / plan.n_weights()
        return {
            "label": label, "layers": list(plan.layers), "k": chosen, "bits_per_weight": bits,
            "model_bits_per_weight": bits if model_bits is None else model_bits,
            **workload.score(outputs), "golden": workload.score(golden_outputs),
            "counters": totals, "activates": activates, "traffic_ratio": totals["dram_lines_read"] / plan.full_lines(),
            "link_bytes": totals["drs_sent"] * self.tb.params.line_bytes, "cycles": cycles,
            "energy": streaming.energy_split(totals, activates, tokens),
            "per_layer": per_layer, "exact": bool(exact), "wrong_weights": wrong_weights[:10],
            "wrong_outputs": wrong_outputs,
        }


def build_workload(config: dict):
    """The workload of a config, its read set to the config's rule and correction."""
    if config.get("workload", "minilm") == "smollm2":
        workload = SmolLM2Workload(fmt_name=config["format"], n_windows=config.get("windows", 4),
                                   window=config.get("window", 256))
        workload.set_read(config["rule"], config.get("corrected", False))
        return workload, workload.layer_matrices(config["layers"], config.get("matrices"))
    workload = MiniLMWorkload(sentences=config.get("sentences"))
    return workload, workload.layer_matrices(config["layers"], config.get("matrices"))


def schedules_of(config: dict, plan: streaming.StreamingPlan, workload) -> list:
    """(label, choose, per_matrix_k of the planned matrices or None, model bits/weight or None) of every static
    k, named schedule and fitted policy the config asks for."""
    # the whole model's bits/weight only where every layer follows the schedule (SmolLM2's resident reads)
    schedules = [(f"static k={k}", streaming.static_choice(k), {name: k for name in plan.names()},
                  float(k) if workload.name == "smollm2" else None) for k in config["ks"]]
    if "per_matrix" in config:
        from smartquant.workloads.stream_workloads import bits_per_weight, smollm2_layer_precisions
        mapping = smollm2_layer_precisions(workload.model, config["per_matrix"]["spec"], plan.B)
        bits = bits_per_weight(mapping, {name: workload.model.weights[name].size for name in mapping})
        fitted = (config["per_matrix"]["spec"] or "").startswith("policy")
        schedules.append((f"{'policy (a)' if fitted else 'per-kind'} {bits:.2f} b/w", streaming.mapping_choice(mapping),
                          {name: mapping[name] for name in plan.names()}, bits))
    if config["policies"]:
        schedules += minilm_policy_schedules(config, plan, workload)
    return schedules


def minilm_policy_schedules(config: dict, plan: streaming.StreamingPlan, workload) -> list:
    """MiniLM's per-matrix greedy and per-input activation policies, fitted on the calibration sentences."""
    from smartquant.workloads import policies
    from smartquant.workloads.minilm import LAYER_MATRICES
    from smartquant.workloads.sweep import prepare
    if workload.name != "minilm":
        raise AssertionError("fitted policies exist for MiniLM only; give SmolLM2 its schedules")
    if any(len(plan.regions[layer].matrices) != len(LAYER_MATRICES) for layer in plan.layers):
        raise AssertionError("policies are fitted on whole layers: do not restrict `matrices` with policies")
    layers = list(plan.layers)
    calibration = prepare(policies.CALIBRATION_SENTENCES, workload.model, layers=layers)
    calibration._stored[plan.fmt_name] = {name: plan.stored[name] for name in calibration.names}
    names = [name for name in calibration.names if name in plan.placements]
    budget = config["budget"]
    schedules = []
    if "greedy" in config["policies"]:
        nsr = policies.output_nsr(calibration, plan.fmt_name, plan.rule)
        sizes = {name: workload.model.weights[name].size for name in names}
        allocation = policies.greedy_allocation({n: nsr[n] for n in names}, sizes, budget, plan.B)
        schedules.append((f"greedy {budget:g} b/w", streaming.mapping_choice(allocation), allocation, None))
    if "activation" in config["policies"]:
        activation = policies.ActivationPolicy.fit_tables(calibration, plan.fmt_name, plan.rule)
        activation.calibrate(calibration, budget)
        mask = workload.inputs.attention_mask
        schedules.append((f"activation {budget:g} b/w", activation_choice(activation, mask), None, None))
    return schedules


def activation_choice(policy, mask: np.ndarray):
    """choose(name, x) of policies.ActivationPolicy on the batch's real tokens (one k per matrix per batch)."""
    from smartquant.workloads.policies import activation_statistics
    return lambda name, x: int(policy.choose(name, activation_statistics(x, mask)))


@cocotb.test()
async def test_stream_layers(dut):
    """Load the layers through the write path, stream them at every schedule, check, account, record."""
    params, seed, config = settings()
    wall_start = time.monotonic()
    tb = TB(dut, params, seed)
    await tb.reset()
    workload, layer_matrices = build_workload(config)
    plan = streaming.StreamingPlan(layer_matrices, params, config["format"], config["R"], config["rule"],
                                   config.get("corrected", False))
    host = StreamingHost(tb, plan, workload, config["view"], config.get("load_view", "weight-major"))
    tb.scoreboard.record = False
    with single_blas_thread():
        reference = workload.reference()
        load = await host.load()
        dut._log.info("loaded %d %s lines in %d cycles", load["rwd"], load["view"], load["cycles"])
        runs = []
        for label, choose, per_matrix_k, model_bits in schedules_of(config, plan, workload):
            run = await host.stream(label, choose, per_matrix_k, model_bits)
            dut._log.info("%s: %.3f bits/weight, %s, exact %s, %d cycles", label, run["bits_per_weight"],
                          ", ".join(f"{key} {run[key]:.5g}" for key in run["golden"]), run["exact"], run["cycles"])
            runs.append(run)
        await tb.finish()
    wall = time.monotonic() - wall_start
    result = {
        "workload": workload.name, "config": config, "params": params.as_dict(), "seed": seed,
        "inputs": int(len(workload.inputs)), "tokens": workload.tokens(), "n_weights": plan.n_weights(),
        "reference": {key: value for key, value in reference.items() if key != "embeddings"},
        "load": load, "runs": runs,
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
        f"{run['label']}: weights {run['wrong_weights']}, outputs {run['wrong_outputs']}" for run in runs
        if not run["exact"])


# --- the KV cache of one SmolLM2 layer through the device (smartquant demo --model smollm2 --kv) ---------------
class KVStreamingHost(StreamingHost):
    """The host of a KV run (workloads/kv_cache.py KVDeviceLayer): the forward up to the device layer gives its K
    and V; they are written token by token through the weight-major view and, after each token, every block of the
    tokens so far is read through the packed-k view at the policy's precision for that step; then the forward
    runs again with that layer attending over what the device returned."""

    def __init__(self, tb: TB):
        super().__init__(tb, None, None, "packed")

    async def run_kv(self, setup, label: str, device) -> dict:
        from smartquant.workloads import kv_cache
        tb, LB = self.tb, self.tb.params.line_bytes
        hook = kv_cache.DeviceLayerAttention(device)
        try:
            kv_cache.token_nll(setup, hook)
            raise AssertionError(f"the forward never reached layer {device.layer}")
        except kv_cache.KVNeeded as need:
            device.store(need.kv)
        self.label = label
        await self.wait()
        await self.program_region(device.region, device.fmt.bits, device.rule)
        await self.clear_counters()
        start, writes, reads = tb.cycles, 0, 0
        for t in range(device.geometry.T):
            lines, data = device.token_writes(t)
            for line, row in zip(lines.tolist(), data):
                tb.write(View.WEIGHT_MAJOR, line, int.from_bytes(row.tobytes(), "little"))
            writes += len(lines)
            await self.wait()                 # no order between the Req and RwD channels (DEVICE.md)
            pending = []
            for kind, stream, block, k, block_lines in device.step_reads(t):
                rows = np.zeros((k, LB), dtype=np.uint8)
                for row, line in enumerate(block_lines.tolist()):
                    self.capture.expect(tb.read(View.PACKED_K, line, k), rows, row)
                pending.append((kind, stream, block, k, rows))
                reads += k
            await self.wait()                 # before the next token's writes land in the newest block
            assert not self.capture.bad, "DRS with NXM or poison: " + "; ".join(self.capture.bad[:5])
            for kind, stream, block, k, rows in pending:
                device.collect(t, kind, stream, block, k, rows)
        cycles = tb.cycles - start
        counters = {counter_name(n): value for n, value in enumerate(await tb.check_counters())}
        self.issued += writes + reads
        bursts = sorted(self.ar.bursts + self.aw.bursts)          # reads and writes in issue order
        activates = RowModel().replay(np.concatenate(
            [np.arange(line, line + beats) for _, line, beats in bursts])).activates
        nll = kv_cache.token_nll(setup, hook)
        golden_nll = kv_cache.token_nll(setup, kv_cache.KVCacheAttention(device.fmt, device.rule, device.policy))
        wrong_fields, missing = device.wrong_fields(), device.missing()
        exact = (np.array_equal(nll, golden_nll) and not wrong_fields and not missing
                 and not device.inconsistent)
        geometry = device.geometry
        shape = kv_cache.CacheShape(1, geometry.heads, geometry.head_dim, geometry.n, geometry.T, geometry.W)
        coalesced = kv_cache.kv_counters(shape, kv_cache.layer_policy(device.policy, device.layer), device.fmt)
        tokens = geometry.n * geometry.T
        return {
            "label": label, "format": device.fmt.name, "fill": device.rule, "policy": device.policy.name,
            "layer": device.layer, "perplexity": float(np.exp(nll.mean())),
            "golden": {"perplexity": float(np.exp(golden_nll.mean()))}, "token_nll_equal": bool(
                np.array_equal(nll, golden_nll)), "exact": bool(exact), "wrong_fields": wrong_fields,
            "missing": missing, "inconsistent": device.inconsistent[:10], "writes": writes, "reads": reads,
            "cycles": cycles, "counters": {name: value for name, value in counters.items() if value},
            "activates": activates, "energy": streaming.energy_split(counters, activates, tokens),
            "coalesced_model": {name: value for name, value in coalesced.items() if value},
        }


@cocotb.test()
async def test_stream_kv(dut):
    """The KV cache of one SmolLM2 layer through the device for every run of the config; RTL == golden."""
    from smartquant.workloads import kv_cache
    params, seed, config = settings()
    wall_start = time.monotonic()
    tb = TB(dut, params, seed)
    await tb.reset()
    tb.scoreboard.record = False
    host = KVStreamingHost(tb)
    setup = kv_cache.prepare(config["windows"], config["window"], "test", weights=config.get("weights", "reference"))
    cfg = setup.model.config
    n, T = setup.batch.shape      # the forward's positions: the window's tokens and the last target (K/V too)
    runs_config = [(run["format"], run["fill"], kv_cache.policy_from_json(run["policy"])) for run in config["runs"]]
    places, end_line = kv_cache.device_regions([fmt for fmt, _, _ in runs_config], n, T, cfg.n_kv_heads,
                                               cfg.head_dim, params.data_width)
    assert end_line * params.line_bytes <= 1 << params.dram_addr_bits, "the KV regions do not fit the device"
    with single_blas_thread():
        reference = float(np.exp(kv_cache.token_nll(setup, None).mean()))
        runs = []
        for fmt_name, rule, policy in runs_config:
            index, first_line = places[fmt_name]
            device = kv_cache.KVDeviceLayer(kv_cache.kv_format(fmt_name), rule, policy, config["layer"], n, T,
                                            cfg.n_kv_heads, cfg.head_dim, params.data_width, index, first_line)
            label = f"{fmt_name} {policy.name}, {rule}"
            run = await host.run_kv(setup, label, device)
            dut._log.info("%s: perplexity %.4f (golden %.4f), exact %s, %d writes, %d reads, %d cycles", label,
                          run["perplexity"], run["golden"]["perplexity"], run["exact"], run["writes"], run["reads"],
                          run["cycles"])
            runs.append(run)
        await tb.finish()
    wall = time.monotonic() - wall_start
    result = {
        "workload": "smollm2-kv", "config": config, "params": params.as_dict(), "seed": seed, "text": setup.source,
        "windows": n, "window": T - 1, "tokens": n * (T - 1), "positions": n * T, "weights": setup.weights, "reference_perplexity": reference,
        "runs": runs,
        "speed": {"cycles": tb.cycles, "wall_seconds": wall, "cycles_per_second": tb.cycles / wall,
                  "transactions": host.issued, "transactions_per_second": host.issued / wall},
        "scoreboard": {"drs_checked": tb.scoreboard.stats.checked_drs, "ndr_checked": tb.scoreboard.stats.checked_ndr,
                       "mismatches": tb.scoreboard.stats.mismatches},
    }
    if config.get("out"):
        with open(config["out"], "w") as handle:
            json.dump(result, handle, indent=1)
    bad = [run["label"] for run in runs if not run["exact"]]
    assert not bad, "KV reads or perplexity from the RTL differ from the golden model in runs " + "; ".join(
        f"{run['label']}: NLL equal {run['token_nll_equal']}, fields {run['wrong_fields']}, missing "
        f"{run['missing']}, inconsistent {run['inconsistent']}" for run in runs if not run["exact"])
