"""Address decode (hdl/engine/address_map.py) in the Amaranth simulator against DEVICE.md §2.

Expectations come from hand-worked addresses and from a small Python reading of DEVICE.md §2 that uses
smartquant.params.split_hpa for the bit fields (not the RTL's slicing).
"""
import random

from amaranth.hdl import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from smartquant.params import ControllerParams, View, hpa, split_hpa
from smartquant.hdl.csr.layouts import region_entry_layout, region_end_line
from smartquant.hdl.engine.address_map import (
    decode_address, match_early_decode, plane_line, region_hits, region_locals, split_address,
)

PARAMS = ControllerParams(data_width=128, n_regions=2, dram_addr_bits=20)
LINE_BYTES = PARAMS.line_bytes


def region(enable=1, base_line=0, n_superblocks=1, B=8, R=4, default_k=0, bf16=0, midpoint=0):
    return {"enable": enable, "bf16": bf16, "log2_b": B.bit_length() - 1, "log2_r": R.bit_length() - 1,
            "default_k": default_k, "midpoint": midpoint, "base_line": base_line, "n_superblocks": n_superblocks,
            "end_line": region_end_line(PARAMS, base_line, n_superblocks, B.bit_length() - 1, R.bit_length() - 1)}


def reference_decode(address_hpa, regions):
    """DEVICE.md §2 in plain Python: returns the fields the RTL must produce (None where don't-care)."""
    view, k_field, offset, high = split_hpa(PARAMS, address_hpa)
    line = offset // LINE_BYTES
    hit_index = None
    for i, r in enumerate(regions):
        B, R = 1 << r["log2_b"], 1 << r["log2_r"]
        if r["enable"] and r["base_line"] <= line < r["base_line"] + r["n_superblocks"] * R * B:
            hit_index = i
            break
    if hit_index is None or high:
        return {"region_hit": 0, "mapped": 0}
    r = regions[hit_index]
    B, R = 1 << r["log2_b"], 1 << r["log2_r"]
    L = line - r["base_line"]
    k = {View.PACKED_K: k_field, View.EXPANDED_K: k_field,
         View.PACKED_DEFAULT: r["default_k"], View.EXPANDED_DEFAULT: r["default_k"]}.get(view, B)
    k_legal = int(1 <= k <= B)
    if view == View.RAW:
        s, rem = divmod(L, R * B)
        p, slot = divmod(rem, R)
        block, j = s * R + slot, 0
    else:
        block, j = divmod(L, B)
        s, slot = divmod(block, R)
    mapped = view <= View.EXPANDED_DEFAULT
    if view in (View.PACKED_K, View.PACKED_DEFAULT) and k_legal and j >= k:
        mapped = False
    out = {"region_hit": 1, "mapped": int(mapped), "region": hit_index, "view": view, "k_legal": k_legal,
           "block": block, "superblock": s, "slot_r": slot, "raw_line": line}
    if k_legal:
        out["k"] = k
    if view != View.RAW:
        out["line_in_slot"] = j
    else:
        out["plane"] = p
    return out


def run_decode(cases):
    """cases: list of (regions, hpa). Returns the decoded field dicts from the simulator."""
    m = Module()
    regions_sig = Signal(data.ArrayLayout(region_entry_layout(PARAMS), PARAMS.n_regions))
    address = Signal(PARAMS.message_address_bits)
    decoded = decode_address(m, PARAMS, address, regions_sig)
    results = []

    async def bench(ctx):
        for regions, address_hpa in cases:
            for i, r in enumerate(regions):
                for name, value in r.items():
                    ctx.set(getattr(regions_sig[i], name), value)
            ctx.set(address, address_hpa >> PARAMS.line_offset_bits)
            results.append({name: ctx.get(getattr(decoded, name)) for name, _ in decoded.shape()})

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return results


def check(got, expected):
    for name, value in expected.items():
        assert got[name] == value, f"{name}: got {got[name]}, expected {value} ({expected})"


BASE = 0x100
REGIONS = [region(base_line=BASE, n_superblocks=2, B=8, R=4, default_k=5), region(enable=0)]


def line_hpa(view, line, k=0):
    return hpa(PARAMS, view, line * LINE_BYTES, k)


def test_hand_worked_addresses():
    cases = [
        # raw line L = 37 = 1*32 + 1*4 + 1 -> superblock 1, plane 1, slot 1, block 5
        (line_hpa(View.RAW, BASE + 37), dict(mapped=1, block=5, superblock=1, slot_r=1, plane=1, raw_line=BASE + 37)),
        # weight-major L = 37 -> block 4 line 5; block 4 = superblock 1 slot 0; k = B
        (line_hpa(View.WEIGHT_MAJOR, BASE + 37), dict(mapped=1, block=4, line_in_slot=5, superblock=1, slot_r=0,
                                                      k=8, k_legal=1)),
        # packed k = 3: line 5 of the slot is past the k packed lines -> unmapped; line 2 mapped
        (line_hpa(View.PACKED_K, BASE + 37, k=3), dict(mapped=0, region_hit=1, k=3, k_legal=1)),
        (line_hpa(View.PACKED_K, BASE + 34, k=3), dict(mapped=1, block=4, line_in_slot=2, k=3)),
        # expanded k = 3 keeps all B lines of the slot
        (line_hpa(View.EXPANDED_K, BASE + 37, k=3), dict(mapped=1, block=4, line_in_slot=5, k=3, k_legal=1)),
        # illegal k: 0 and k > B
        (line_hpa(View.EXPANDED_K, BASE + 3, k=0), dict(k_legal=0)),
        (line_hpa(View.PACKED_K, BASE + 3, k=9), dict(k_legal=0)),
        (line_hpa(View.PACKED_K, BASE + 7, k=8), dict(mapped=1, k_legal=1, line_in_slot=7)),
        # default views take the region's k (5)
        (line_hpa(View.PACKED_DEFAULT, BASE + 4, k=2), dict(mapped=1, k=5, line_in_slot=4)),
        (line_hpa(View.PACKED_DEFAULT, BASE + 5, k=2), dict(mapped=0, k=5)),
        # reserved views: region hit but unmapped
        (line_hpa(6, BASE + 1), dict(mapped=0, region_hit=1)),
        (line_hpa(7, BASE + 1), dict(mapped=0, region_hit=1)),
        # outside the window: first line past the span (2 * 4 * 8 = 64 lines) and the line before the base
        (line_hpa(View.RAW, BASE + 64), dict(mapped=0, region_hit=0)),
        (line_hpa(View.RAW, BASE - 1), dict(mapped=0, region_hit=0)),
        (line_hpa(View.RAW, BASE + 63), dict(mapped=1, block=7, superblock=1, slot_r=3, plane=7)),
        # any bit above the map set -> unmapped
        (line_hpa(View.RAW, BASE) | (1 << PARAMS.hpa_bits), dict(mapped=0, region_hit=0)),
        (line_hpa(View.RAW, BASE) | (1 << 51), dict(mapped=0, region_hit=0)),
    ]
    results = run_decode([(REGIONS, a) for a, _ in cases])
    for got, (address, expected) in zip(results, cases):
        check(got, expected)


def test_lowest_region_wins_and_disabled_regions_do_not_match():
    overlapping = [region(base_line=0x10, n_superblocks=1, B=4, R=1), region(base_line=0x0, n_superblocks=4, B=4, R=2)]
    only_second = [dict(overlapping[0], enable=0), overlapping[1]]
    results = run_decode([(overlapping, line_hpa(View.RAW, 0x11)), (only_second, line_hpa(View.RAW, 0x11)),
                          (overlapping, line_hpa(View.RAW, 0x05))])
    check(results[0], dict(mapped=1, region=0, block=0, plane=1))
    check(results[1], dict(mapped=1, region=1, block=(0x11 // 8) * 2 + 1, plane=0))
    check(results[2], dict(mapped=1, region=1))


def test_random_addresses_match_the_reference():
    rng = random.Random(4)
    cases = []
    for _ in range(300):
        regions = []
        for _ in range(PARAMS.n_regions):
            B = rng.choice([2, 4, 8, 16])
            R = 1 << rng.randrange(0, 7)
            regions.append(region(enable=rng.random() < 0.8, base_line=rng.randrange(0, 1 << 12),
                                  n_superblocks=rng.randrange(0, 6), B=B, R=R, default_k=rng.randrange(0, 18),
                                  midpoint=rng.randrange(2)))
        target = rng.choice(regions)
        line = target["base_line"] + rng.randrange(-4, 3 * 64 * 16)
        line &= (1 << (PARAMS.dram_addr_bits - PARAMS.line_offset_bits)) - 1
        address = line_hpa(rng.randrange(8), line, k=rng.randrange(0, 18))
        if rng.random() < 0.05:
            address |= 1 << rng.randrange(PARAMS.hpa_bits, 52)
        cases.append((regions, address))
    for got, (regions, address) in zip(run_decode(cases), cases):
        check(got, reference_decode(address, regions))


def test_match_early_decode_is_the_decode_of_the_matched_region():
    """address_map.match_early_decode (block, k, k_legal and line j decoded under every region and selected by the
    one-hot match, which the read engine's stage A registers with the match; its block is match_block's, which the
    write path registers) against the reference decode, on random regions, views, k fields and addresses."""
    m = Module()
    regions_sig = Signal(data.ArrayLayout(region_entry_layout(PARAMS), PARAMS.n_regions))
    address = Signal(PARAMS.message_address_bits)
    line = split_address(PARAMS, address)[0]
    onehot = region_hits(m, PARAMS, line, regions_sig)
    early = match_early_decode(m, PARAMS, address, onehot, regions_sig, region_locals(m, PARAMS, line, regions_sig))
    rng = random.Random(11)
    checked = {}

    async def bench(ctx):
        for _ in range(600):
            regions = [region(enable=rng.random() < 0.9, base_line=rng.randrange(0, 1 << 12),
                              n_superblocks=rng.randrange(1, 6), B=rng.choice([2, 4, 8, 16]),
                              R=1 << rng.randrange(0, 7), default_k=rng.randrange(0, 18))
                       for _ in range(PARAMS.n_regions)]
            target = rng.choice(regions)
            span = target["n_superblocks"] << (target["log2_r"] + target["log2_b"])
            line = target["base_line"] + rng.randrange(-2, span + 2)   # a few lines past either end miss
            line &= (1 << (PARAMS.dram_addr_bits - PARAMS.line_offset_bits)) - 1
            view = rng.randrange(8)
            address_hpa = line_hpa(view, line, k=rng.randrange(0, 18))
            for i, r in enumerate(regions):
                for name, value in r.items():
                    ctx.set(getattr(regions_sig[i], name), value)
            ctx.set(address, address_hpa >> PARAMS.line_offset_bits)
            expected = reference_decode(address_hpa, regions)
            got = {name: ctx.get(getattr(early, name)) for name in ("block", "k", "k_legal", "line_in_slot")}
            if expected["region_hit"]:
                context = (regions, hex(address_hpa), expected, got)
                assert got["block"] == expected["block"] and got["k_legal"] == expected["k_legal"], context
                if expected["k_legal"]:
                    assert got["k"] == expected["k"], context
                if view != View.RAW:
                    assert got["line_in_slot"] == expected["line_in_slot"], context
                kind = "raw" if view == View.RAW else ("block", expected["k_legal"])   # raw: k = B, legal
                checked[kind] = checked.get(kind, 0) + 1
            else:
                assert ctx.get(onehot) == 0 and not any(got.values()), got

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    # both block decodes (raw view, block views; the latter with legal and illegal k) were exercised
    assert len(checked) == 3 and min(checked.values()) > 20, checked


def test_plane_line_is_base_plus_s_r_b_plus_p_r_plus_r():
    m = Module()
    base, s, p, r = Signal(16), Signal(16), Signal(4), Signal(6)
    log2_b, log2_r = Signal(3), Signal(3)
    out = Signal(16)
    m.d.comb += out.eq(plane_line(base, (s << log2_r) | r, p, log2_b, log2_r, 16))   # block s*R + r
    rng = random.Random(1)

    async def bench(ctx):
        for _ in range(200):
            B, R = 1 << rng.randrange(1, 5), 1 << rng.randrange(0, 7)
            values = dict(base=rng.randrange(0, 4096), s=rng.randrange(0, 20), p=rng.randrange(B), r=rng.randrange(R))
            for sig, v in ((base, values["base"]), (s, values["s"]), (p, values["p"]), (r, values["r"]),
                           (log2_b, B.bit_length() - 1), (log2_r, R.bit_length() - 1)):
                ctx.set(sig, v)
            expected = values["base"] + values["s"] * R * B + values["p"] * R + values["r"]
            assert ctx.get(out) == expected % (1 << 16)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
