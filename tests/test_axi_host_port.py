"""AxiHostPort (hdl/host/axi_port.py) in the Amaranth simulator, against a stand-in for the controller core.

The stand-in core takes Req and RwD with random ready, answers every MemRd in arrival order (as the read engine
does) after random delays, with data, MemData-NXM and poison that are fixed functions of the line, and answers
every RwD with an NDR Cmp after a random delay, out of order across writes (as the write path may). The host
side sends random AR, AW and W traffic (IDs from a small set so they repeat, INCR bursts of 1..8 beats, some
narrow or FIXED bursts, random strobes and WUSER) and holds RREADY / BREADY low at random. Expected, worked out
from the AXI rules and the port's documented mapping (docs/DEVICE.md §10), independently of the RTL:
- Req: one MemRd per read beat, line = ARADDR >> 6 + beat (view 7 for a burst the port does not serve);
- R: in AR order, per burst RID = ARID, RLAST on the last beat, RDATA / RRESP / RUSER from the DRS;
- RwD: one per W beat at AWADDR >> 6 + beat, MemWr for full strobes else MemWrPtl, poison = WUSER;
- B: one per AW, in AW order, BID = AWID, each only after the Cmp of every one of its beats has arrived.
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.backend.axi import AXI_BURST_INCR, AXI_RESP_OKAY, AXI_RESP_SLVERR
from smartquant.hdl.host.axi_port import AXI_RESP_DECERR, RESERVED_VIEW, AxiHostPort
from smartquant.params import ControllerParams, DrsOpcode, NdrOpcode, ReqOpcode, RwdOpcode

PARAMS = ControllerParams(data_width=64, b_max=4, n_regions=2, request_depth=4, dram_addr_bits=14,
                          host_port="axi", host_axi_id_bits=3)
AXI_BURST_FIXED = 0b00


def line_data(line: int) -> int:
    return (line * 0x9E3779B97F4A7C15 + 0x1234) & ((1 << PARAMS.data_width) - 1)


def line_is_nxm(line: int) -> bool:
    return line % 7 == 3


def line_poison(line: int) -> int:
    return int(line % 5 == 1)


def expected_line(p: ControllerParams, addr: int, beat: int, bad: bool) -> int:
    line = (addr >> p.line_offset_bits) + beat
    if bad:
        view_lsb = p.view_shift - p.line_offset_bits
        line = (line & ~(0b111 << view_lsb)) | (RESERVED_VIEW << view_lsb)
    return line & ((1 << p.message_address_bits) - 1)


def random_burst(rng: random.Random, p: ControllerParams, n_ids: int) -> dict:
    view = rng.randrange(6)
    offset = rng.randrange(1 << p.dram_addr_bits) & ~(p.line_bytes - 1)
    addr = (view << p.view_shift) | (rng.randrange(17) << p.k_shift) | offset | rng.choice([0, 0, 0, 5])
    bad = rng.random() < 0.1
    size = p.line_offset_bits if not bad or rng.random() < 0.5 else p.line_offset_bits - 1
    burst = AXI_BURST_INCR if size != p.line_offset_bits or not bad else AXI_BURST_FIXED
    return {"id": rng.randrange(n_ids), "addr": addr, "len": rng.choice([0, 0, 0, 1, 3, 7]), "size": size,
            "burst": burst, "bad": bad}


def run_port(seed: int, n_reads: int = 60, n_writes: int = 60, n_ids: int = 3, host_ready: float = 0.6,
             core_ready: float = 0.6, max_delay: int = 10, max_cycles: int = 20_000):
    p = PARAMS
    rng = random.Random(seed)
    dut = AxiHostPort(p)
    ars = [random_burst(rng, p, n_ids) for _ in range(n_reads)]
    aws = [random_burst(rng, p, n_ids) for _ in range(n_writes)]
    full = (1 << p.line_bytes) - 1
    w_beats = [(rng.getrandbits(p.data_width), rng.choice([full, full, 0, rng.getrandbits(p.line_bytes)]),
                int(rng.random() < 0.2)) for aw in aws for _ in range(aw["len"] + 1)]
    seen = {"req": [], "r": [], "rwd": [], "b": [], "cmp_cycle": {}, "b_cycle": []}

    async def bench(ctx):
        host = dut.host
        ar_queue, aw_queue, w_queue = list(ars), list(aws), list(w_beats)
        drs_queue = []            # [due cycle, line] in MemRd arrival order
        cmp_pool = []             # [due cycle, tag, write index] of RwDs awaiting their Cmp
        rwd_count = 0
        cycle = 0
        while cycle < max_cycles:
            if (not ar_queue and not aw_queue and not w_queue and not drs_queue and not cmp_pool
                    and len(seen["b"]) == len(aws) and sum(1 for r in seen["r"] if r["last"]) == len(ars)):
                break
            # host side: AR / AW / W offered with random gaps, RREADY / BREADY random
            for channel, queue in (("ar", ar_queue), ("aw", aw_queue)):
                offer = bool(queue) and (ctx.get(getattr(host, f"{channel}valid")) or rng.random() < 0.7)
                ctx.set(getattr(host, f"{channel}valid"), offer)
                if offer:
                    for field in ("id", "addr", "len", "size", "burst"):
                        ctx.set(getattr(host, f"{channel}{field}"), queue[0][field])
            offer_w = bool(w_queue) and (ctx.get(host.wvalid) or rng.random() < 0.7)
            ctx.set(host.wvalid, offer_w)
            if offer_w:
                ctx.set(host.wdata, w_queue[0][0])
                ctx.set(host.wstrb, w_queue[0][1])
                ctx.set(host.wuser, w_queue[0][2])
            ctx.set(host.rready, rng.random() < host_ready)
            ctx.set(host.bready, rng.random() < host_ready)
            # core side
            ctx.set(dut.req.ready, rng.random() < core_ready)
            ctx.set(dut.rwd.ready, rng.random() < core_ready)
            drs_now = bool(drs_queue) and drs_queue[0][0] <= cycle
            ctx.set(dut.drs.valid, drs_now)
            if drs_now:
                line = drs_queue[0][1]
                ctx.set(dut.drs.p.opcode, DrsOpcode.MEM_DATA_NXM if line_is_nxm(line) else DrsOpcode.MEM_DATA)
                ctx.set(dut.drs.p.data, line_data(line))
                ctx.set(dut.drs.p.poison, line_poison(line))
            due = [entry for entry in cmp_pool if entry[0] <= cycle]
            cmp_entry = rng.choice(due) if due else None
            ctx.set(dut.ndr.valid, cmp_entry is not None)
            if cmp_entry is not None:
                ctx.set(dut.ndr.p.opcode, NdrOpcode.CMP)
                ctx.set(dut.ndr.p.tag, cmp_entry[1])
            # handshakes of this cycle (testbench reads see the settled combinational values)
            if ctx.get(host.arvalid) and ctx.get(host.arready):
                ar_queue.pop(0)
            if ctx.get(host.awvalid) and ctx.get(host.awready):
                aw_queue.pop(0)
            if ctx.get(host.wvalid) and ctx.get(host.wready):
                w_queue.pop(0)
            if ctx.get(dut.req.valid) and ctx.get(dut.req.ready):
                line = ctx.get(dut.req.p.address)
                seen["req"].append((ctx.get(dut.req.p.opcode), line))
                drs_queue.append([max([cycle + 1 + rng.randrange(max_delay)] + [d for d, _ in drs_queue[-1:]]),
                                  line])
            if drs_now and ctx.get(dut.drs.ready):
                drs_queue.pop(0)
            if ctx.get(dut.rwd.valid) and ctx.get(dut.rwd.ready):
                fields = {name: ctx.get(getattr(dut.rwd.p, name))
                          for name in ("opcode", "address", "tag", "byte_enable", "data", "poison")}
                seen["rwd"].append(fields)
                cmp_pool.append([cycle + 1 + rng.randrange(max_delay), fields["tag"], rwd_count])
                rwd_count += 1
            if cmp_entry is not None and ctx.get(dut.ndr.ready):
                cmp_pool.remove(cmp_entry)
                seen["cmp_cycle"][cmp_entry[2]] = cycle
            if ctx.get(host.rvalid) and ctx.get(host.rready):
                seen["r"].append({name: ctx.get(getattr(host, f"r{name}"))
                                  for name in ("id", "data", "resp", "user", "last")})
            if ctx.get(host.bvalid) and ctx.get(host.bready):
                seen["b"].append((ctx.get(host.bid), ctx.get(host.bresp)))
                seen["b_cycle"].append(cycle)
            await ctx.tick()
            cycle += 1
        seen["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return ars, aws, w_beats, seen


def check_run(ars, aws, w_beats, seen):
    p = PARAMS
    assert seen["cycles"] < 20_000, "the port hung"
    want_req = [(ReqOpcode.MEM_RD, expected_line(p, ar["addr"], beat, ar["bad"]))
                for ar in ars for beat in range(ar["len"] + 1)]
    assert seen["req"] == want_req
    want_r = []
    for ar in ars:
        for beat in range(ar["len"] + 1):
            line = expected_line(p, ar["addr"], beat, ar["bad"])
            if ar["bad"]:
                data, resp, user = 0, AXI_RESP_SLVERR, 0
            else:
                data, user = line_data(line), line_poison(line)
                resp = AXI_RESP_DECERR if line_is_nxm(line) else AXI_RESP_OKAY
            want_r.append({"id": ar["id"], "data": data, "resp": resp, "user": user, "last": int(beat == ar["len"])})
    assert seen["r"] == want_r
    full = (1 << p.line_bytes) - 1
    want_rwd, beat_index, write_of_beat = [], 0, []
    for index, aw in enumerate(aws):
        for beat in range(aw["len"] + 1):
            data, strobe, user = w_beats[beat_index]
            beat_index += 1
            want_rwd.append({"opcode": RwdOpcode.MEM_WR if strobe == full else RwdOpcode.MEM_WR_PTL,
                             "address": expected_line(p, aw["addr"], beat, aw["bad"]), "byte_enable": strobe,
                             "data": data, "poison": user})
            write_of_beat.append(index)
    assert [{k: v for k, v in rwd.items() if k != "tag"} for rwd in seen["rwd"]] == want_rwd
    assert seen["b"] == [(aw["id"], AXI_RESP_SLVERR if aw["bad"] else AXI_RESP_OKAY) for aw in aws]
    # B after landing: every beat's Cmp arrived before (in an earlier cycle than) the burst's B handshake
    for beat, index in enumerate(write_of_beat):
        assert seen["cmp_cycle"][beat] < seen["b_cycle"][index], f"B of write {index} before the Cmp of beat {beat}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_axi_port_orders_splits_and_maps_responses(seed):
    check_run(*run_port(seed))


def test_axi_port_under_heavy_backpressure_and_slow_core():
    check_run(*run_port(11, n_reads=30, n_writes=30, host_ready=0.2, core_ready=0.3, max_delay=40))


def test_axi_port_streams_one_beat_per_cycle_without_backpressure():
    """No gaps and no backpressure: a 16-beat read burst turns into 16 MemRds in 16 consecutive cycles and a
    16-beat write burst into 16 RwDs in 16 cycles (the splitters take the next burst as the last beat leaves)."""
    p = PARAMS
    dut = AxiHostPort(p)
    cycles = {"req": [], "rwd": []}

    async def bench(ctx):
        host = dut.host
        ctx.set(dut.req.ready, 1)
        ctx.set(dut.rwd.ready, 1)
        for channel in ("ar", "aw"):
            ctx.set(getattr(host, f"{channel}valid"), 1)
            ctx.set(getattr(host, f"{channel}len"), 15)
            ctx.set(getattr(host, f"{channel}size"), p.line_offset_bits)
            ctx.set(getattr(host, f"{channel}burst"), AXI_BURST_INCR)
        ctx.set(host.wvalid, 1)
        ctx.set(host.wstrb, (1 << p.line_bytes) - 1)
        for cycle in range(40):
            taken = [channel for channel in ("ar", "aw")
                     if ctx.get(getattr(host, f"{channel}valid")) and ctx.get(getattr(host, f"{channel}ready"))]
            if ctx.get(dut.req.valid):
                cycles["req"].append(cycle)
            if ctx.get(dut.rwd.valid):
                cycles["rwd"].append(cycle)
            await ctx.tick()
            for channel in taken:            # one burst each
                ctx.set(getattr(host, f"{channel}valid"), 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(cycles["req"]) == 16 and cycles["req"] == list(range(cycles["req"][0], cycles["req"][0] + 16))
    assert len(cycles["rwd"]) == 16 and cycles["rwd"] == list(range(cycles["rwd"][0], cycles["rwd"][0] + 16))


def test_axi_port_latency_on_an_idle_port():
    """The cycle counts of DEVICE.md §10's timing diagram: AR handshake in cycle t -> MemRd valid in t + 1;
    DRS handshake in t -> R valid in t + 1; AW and W handshakes in t -> RwD valid in t + 1; NDR Cmp
    handshake in t -> B valid in t + 2. Worked out from the registers the port adds (AR/AW/W skids pass
    through, the splitters register the request, R and B leave through an output buffer, a Cmp updates its
    order slot one cycle before the B is queued)."""
    p = PARAMS
    dut = AxiHostPort(p)
    seen = {}

    async def bench(ctx):
        host = dut.host
        ctx.set(dut.req.ready, 1)
        ctx.set(dut.rwd.ready, 1)
        ctx.set(host.rready, 1)
        ctx.set(host.bready, 1)
        for channel in ("ar", "aw"):
            ctx.set(getattr(host, f"{channel}size"), p.line_offset_bits)
            ctx.set(getattr(host, f"{channel}burst"), AXI_BURST_INCR)
        ctx.set(host.arvalid, 1)
        ctx.set(host.awvalid, 1)
        ctx.set(host.wvalid, 1)
        ctx.set(host.wstrb, (1 << p.line_bytes) - 1)
        for cycle in range(30):
            events = {
                "ar": ctx.get(host.arvalid) and ctx.get(host.arready),
                "aw": ctx.get(host.awvalid) and ctx.get(host.awready),
                "w": ctx.get(host.wvalid) and ctx.get(host.wready),
                "req": ctx.get(dut.req.valid), "rwd": ctx.get(dut.rwd.valid),
                "drs": ctx.get(dut.drs.valid) and ctx.get(dut.drs.ready),
                "ndr": ctx.get(dut.ndr.valid) and ctx.get(dut.ndr.ready),
                "r": ctx.get(host.rvalid), "b": ctx.get(host.bvalid),
            }
            for name, happened in events.items():
                if happened and name not in seen:
                    seen[name] = cycle
            await ctx.tick()
            for name, port in (("ar", host.arvalid), ("aw", host.awvalid), ("w", host.wvalid)):
                if events[name]:
                    ctx.set(port, 0)
            # the core answers the MemRd and the RwD 5 cycles after they appear
            ctx.set(dut.drs.valid, "req" in seen and cycle + 1 == seen["req"] + 5)
            ctx.set(dut.ndr.valid, "rwd" in seen and cycle + 1 == seen["rwd"] + 5)
            ctx.set(dut.ndr.p.tag, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["ar"] == seen["aw"] == seen["w"] == 0
    assert seen["req"] == 1 and seen["rwd"] == 1
    assert seen["r"] == seen["drs"] + 1
    assert seen["b"] == seen["ndr"] + 2
