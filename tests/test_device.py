"""Golden request-trace model (golden/device.py) against hand-worked examples of docs/DEVICE.md.

Expected payloads are built independently of golden/layout.py where that is cheap (numpy's own byte order of
int8 / int4 weights, bit arithmetic on Python integers); layout.py itself has its own tests.
"""
import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.golden.device import (
    PoisonRecord,
    PREDICTED_COUNTERS, DeviceModel, ReadBurst, WriteBurst, region_csr_writes, superblocks_for,
)
from smartquant.params import (
    CONTROL_CLEAR_COUNTERS, CONTROL_CLEAR_POISON, CONTROL_HOLE_POISON, CONTROL_MEM_DATA_NXM, CONTROL_NXM_AS_POISON,
    CSR_CONTROL, CSR_COUNTER_BASE, CSR_ID,
    CSR_PARAMS, CSR_REGION_BASE, CSR_STATUS, CSR_VERSION, META_FIELD_NO_OP, ControllerParams, Counter, DrsOpcode,
    Format, NdrOpcode, ReqOpcode, Rounding, RwdOpcode, View, counter_name, region_config_word,
    CSR_POISON_LINE, CSR_POISON_COMMAND, CSR_POISON_LIST_INDEX, CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY,
    CSR_POISON_COUNT, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR, POISON_ENTRY_VALID,
)

PARAMS = ControllerParams(poison_entries=2)
LINE_BYTES = PARAMS.line_bytes
ALL_BYTES = (1 << LINE_BYTES) - 1
MEMORY_BYTES = 1 << 16      # 1024 lines: enough for every test, cheap to allocate
BASE = 32                   # region 0 base line


def make_model(B=8, R=1, n_superblocks=2, fmt=Format.INT, default_k=4, rounding=Rounding.FLOOR, params=PARAMS):
    model = DeviceModel(params, MEMORY_BYTES)
    model.program(region_csr_writes(params, 0, BASE, n_superblocks, fmt, B, R, default_k, rounding))
    return model


def read(model, view, line, k=0, tag=1, ld_id=0):
    responses = model.req(ReqOpcode.MEM_RD, model.address(view, line, k), tag, ld_id=ld_id)
    assert len(responses) == 1
    return responses[0]


def write(model, view, line, data: bytes, poison=0, opcode=RwdOpcode.MEM_WR, byte_enable=ALL_BYTES, tag=2):
    responses = model.rwd(opcode, model.address(view, line), tag, int.from_bytes(bytes(data), "little"),
                          byte_enable, poison)
    assert responses == [type(responses[0])("ndr", NdrOpcode.CMP, tag, 0)]
    return responses[0]


def data_bytes(response) -> np.ndarray:
    return np.frombuffer(response.data.to_bytes(LINE_BYTES, "little"), dtype=np.uint8)


ALL_ONES = (1 << 512) - 1


def is_nxm(response, poison=False, nxm_opcode=False):
    """A decode error's DRS (DEVICE.md §3): all-1s data, MemData-NXM only when CONTROL.mem_data_nxm is set,
    poison = CONTROL.nxm_as_poison."""
    opcode = DrsOpcode.MEM_DATA_NXM if nxm_opcode else DrsOpcode.MEM_DATA
    return (response.channel, response.opcode, response.poison, response.data) == ("drs", opcode, int(poison),
                                                                                     ALL_ONES)


def is_hole(response, poison=False):
    """A hole's DRS (in a region: packed j >= k, illegal k, views 6 and 7): MemData, data 0, poison =
    CONTROL.hole_poison."""
    return (response.channel, response.opcode, response.poison, response.data) == ("drs", DrsOpcode.MEM_DATA,
                                                                                     int(poison), 0)


def int8_block(seed=1):
    return np.random.default_rng(seed).integers(-128, 128, 512).astype(np.int8)


def write_int8_block(model, block, weights):
    """Host writes one INT8 block through the weight-major view: 8 lines of numpy's own bytes."""
    raw = weights.tobytes()
    for j in range(8):
        write(model, View.WEIGHT_MAJOR, BASE + block * 8 + j, raw[j * 64:(j + 1) * 64])


# --- CSRs --------------------------------------------------------------------------------------------------
def test_identity_registers():
    model = DeviceModel(ControllerParams(), MEMORY_BYTES)
    assert model.csr_read(CSR_ID) == 0x5351_4D43
    assert model.csr_read(CSR_VERSION) == 0x0001_0000
    # 64 | 16 << 8 | 4 << 13 | 2 << 18 | 32 << 22, worked by hand from the default parameters
    assert model.csr_read(CSR_PARAMS) == 0x40 + 0x1000 + 0x8000 + 0x8_0000 + 0x800_0000


def test_region_config_readback_and_illegal_fields():
    params = ControllerParams(b_max=8)
    model = DeviceModel(params, MEMORY_BYTES)
    config = CSR_REGION_BASE + 0x8
    legal = region_config_word(enable=True, fmt=Format.INT, B=8, R=4, default_k=3, rounding=Rounding.MIDPOINT)
    model.csr_write(config, legal)
    assert model.csr_read(config) == legal
    illegal = [
        region_config_word(enable=True, fmt=Format.BF16, B=8, R=1, default_k=8, rounding=0),   # BF16, B != 16
        region_config_word(enable=True, fmt=Format.INT, B=16, R=1, default_k=8, rounding=0),   # B > b_max
        legal & ~(0b11 << 12) | (3 << 12),                                                     # rounding 3
        legal | (0b111 << 4),                                                                  # R = 128
    ]
    for word in illegal:
        model.csr_write(config, word)
        assert model.csr_read(config) == word & ~1
    toward_zero = legal & ~(0b11 << 12) | (Rounding.TOWARD_ZERO << 12)                       # rounding 2 is legal
    model.csr_write(config, toward_zero)
    assert model.csr_read(config) == toward_zero
    model.csr_write(config, illegal[0])
    # a disabled region maps nothing
    model.program(region_csr_writes(params, 0, BASE, 1, Format.INT, 8, 1, 8, 0)[:2])
    assert is_nxm(read(model, View.RAW, BASE))


def test_control_bits_self_clear_and_clear_counters():
    model = make_model()
    read(model, View.RAW, 0)                     # unmapped: one nxm read
    assert model.counter(Counter.NXM_READS) == 1
    model.csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON | CONTROL_CLEAR_COUNTERS | CONTROL_CLEAR_POISON)
    assert model.csr_read(CSR_CONTROL) == CONTROL_NXM_AS_POISON
    assert all(value == 0 for value in model.counters.values())
    assert model.csr_read(CSR_COUNTER_BASE + 4 * Counter.NXM_READS) == 0
    with pytest.raises(SmartquantError):
        model.csr_read(CSR_COUNTER_BASE + 4 * Counter.BUSY_CYCLES)
    assert model.csr_read(CSR_COUNTER_BASE + 4 * 29) == 0        # reserved counter


# --- reads through every view ------------------------------------------------------------------------------
def test_weight_major_write_then_every_view_int8():
    model = make_model(B=8, R=1, default_k=4, rounding=Rounding.MIDPOINT)
    weights = int8_block()
    write_int8_block(model, 1, weights)
    unsigned = weights.view(np.uint8).astype(np.int64)
    # packed k = 3: weight w's top 3 bits at bits [3w, 3w+3) of the block stream
    stream = 0
    for j in range(3):
        response = read(model, View.PACKED_K, BASE + 8 + j, k=3, tag=7, ld_id=5)
        assert (response.channel, response.tag, response.ld_id) == ("drs", 7, 5)
        assert (response.meta_field, response.meta_value, response.poison) == (META_FIELD_NO_OP, 0, 0)
        stream |= response.data << (512 * j)
    assert [(stream >> (3 * w)) & 0b111 for w in range(512)] == list(unsigned >> 5)
    # and the same lines from the reference codec
    blocks = layout.to_blocks(layout.fields_from_ints(weights, 8))
    assert np.array_equal(data_bytes(read(model, View.PACKED_K, BASE + 9, k=3)), layout.packed_lines(blocks, 8, 3)[0, 1])
    # raw line of plane p holds bit 7-p of every weight, weight i at bit i
    for plane in (0, 5):
        expected = np.packbits((unsigned >> (7 - plane)) & 1, bitorder="little")
        assert np.array_equal(data_bytes(read(model, View.RAW, BASE + 8 + plane)), expected)
    # weight-major reads back exactly what was written
    back = b"".join(data_bytes(read(model, View.WEIGHT_MAJOR, BASE + 8 + j)).tobytes() for j in range(8))
    assert back == weights.tobytes()
    # expanded k = 3 with the midpoint fill: top 3 bits kept, then 10000
    expected = ((unsigned & 0b1110_0000) | 0b1_0000).astype(np.uint8).tobytes()
    got = b"".join(data_bytes(read(model, View.EXPANDED_K, BASE + 8 + j, k=3)).tobytes() for j in range(8))
    assert got == expected
    # default views use the region's default k = 4
    expected = ((unsigned & 0b1111_0000) | 0b1000).astype(np.uint8).tobytes()
    got = b"".join(data_bytes(read(model, View.EXPANDED_DEFAULT, BASE + 8 + j)).tobytes() for j in range(8))
    assert got == expected
    assert np.array_equal(data_bytes(read(model, View.PACKED_DEFAULT, BASE + 8)), layout.packed_lines(blocks, 8, 4)[0, 0])


def test_bf16_expanded_floor_truncates_mantissa():
    model = make_model(B=16, fmt=Format.BF16, n_superblocks=1, default_k=9)
    values = np.linspace(-3.0, 3.0, 512).astype(np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)      # bf16 patterns (truncated float32)
    raw = bits.tobytes()
    for j in range(16):
        write(model, View.WEIGHT_MAJOR, BASE + j, raw[j * 64:(j + 1) * 64])
    got = b"".join(data_bytes(read(model, View.EXPANDED_DEFAULT, BASE + j)).tobytes() for j in range(16))
    assert got == (bits & 0xFF80).astype(np.uint16).tobytes()    # sign, exponent, no mantissa bit at k = 9


def test_expanded_toward_zero_fill_int8_and_bf16():
    """TOWARD_ZERO: INT dropped bits copy the sign (worked bytewise here), BF16 fills 0 like floor."""
    model = make_model(B=8, default_k=3, rounding=Rounding.TOWARD_ZERO)
    weights = int8_block(4)
    write_int8_block(model, 0, weights)
    codes = weights.view(np.uint8)
    # keep the top 3 bits; a negative code (bit 7 set) gets 11111 below them, a non-negative one 00000
    expected = ((codes & 0xE0) | np.where(codes & 0x80, 0x1F, 0)).astype(np.uint8).tobytes()
    got = b"".join(data_bytes(read(model, View.EXPANDED_DEFAULT, BASE + j)).tobytes() for j in range(8))
    assert got == expected
    assert read(model, View.EXPANDED_K, BASE, k=8).data == read(model, View.WEIGHT_MAJOR, BASE).data
    # packed reads carry no fill: the same bytes whatever the rounding rule
    floor_model = make_model(B=8, default_k=3)
    write_int8_block(floor_model, 0, weights)
    assert read(model, View.PACKED_DEFAULT, BASE + 1).data == read(floor_model, View.PACKED_DEFAULT, BASE + 1).data
    bf16 = make_model(B=16, fmt=Format.BF16, n_superblocks=1, default_k=9, rounding=Rounding.TOWARD_ZERO)
    values = np.linspace(-3.0, 3.0, 512).astype(np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    for j in range(16):
        write(bf16, View.WEIGHT_MAJOR, BASE + j, bits.tobytes()[j * 64:(j + 1) * 64])
    got = b"".join(data_bytes(read(bf16, View.EXPANDED_DEFAULT, BASE + j)).tobytes() for j in range(16))
    assert got == (bits & 0xFF80).astype(np.uint16).tobytes()


def test_int4_plane_run_transpose_and_bursts():
    """INT4, R = 4: the 4 weight-major lines of a block are gathered and written as its 4 plane lines, one
    single-beat burst each (stride R) with every byte strobed; reads fetch k lines stride R."""
    model = make_model(B=4, R=4, n_superblocks=2)
    weights = np.random.default_rng(3).integers(-8, 8, 512)
    nibbles = (weights & 0xF).astype(np.uint8)
    numpy_bytes = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()     # INT4 packed low nibble first
    block = 5                                                            # superblock 1, slot 1
    for j in range(4):
        write(model, View.WEIGHT_MAJOR, BASE + block * 4 + j, numpy_bytes[j * 64:(j + 1) * 64])
    first = BASE + 1 * 16 + 1                                            # s*R*B + p*R + r with p = 0
    assert model.axi_writes == [WriteBurst(first + 4 * p, 1, ((1 << 64) - 1,)) for p in range(4)]
    assert model.gather_flushes == {"full": 1} and model.counter(Counter.DRAM_LINES_WRITTEN) == 4
    model.clear_trace()
    response = read(model, View.PACKED_K, BASE + block * 4 + 1, k=2)
    assert model.axi_reads == [ReadBurst(first, 1), ReadBurst(first + 4, 1)]
    stream = [(nibbles >> 2)[w] for w in range(512)]                     # top 2 bits of each 4-bit weight
    expected = sum(int(v) << (2 * w) for w, v in enumerate(stream))
    assert response.data == (expected >> 512) & ((1 << 512) - 1)        # packed line 1
    for plane in range(4):
        expected = np.packbits((nibbles >> (3 - plane)) & 1, bitorder="little")
        assert np.array_equal(data_bytes(read(model, View.RAW, first + 4 * plane)), expected)


def test_r1_read_is_one_burst_of_k_lines():
    model = make_model(B=8, R=1, n_superblocks=2)
    read(model, View.EXPANDED_K, BASE + 8 + 6, k=5)
    assert model.axi_reads == [ReadBurst(BASE + 8, 5)]
    assert model.counter(Counter.READ_BURSTS) == 1 and model.counter(Counter.DRAM_LINES_READ) == 5
    assert model.counter(Counter.READS_AT_K1 + 4) == 1


# --- unmapped, illegal, dropped ----------------------------------------------------------------------------
def test_decode_errors_answer_all_ones_with_the_control_opcode_and_poison():
    """Only an address no region holds (or with bits above the map) is a decode error: all-1s data, MemData-NXM
    only for a host that accepts it (CONTROL[3]), poison per CONTROL[0]; reserved views inside a region are holes.
    Regression: the device answered MemData-NXM with data 0 by default, and also for reserved views."""
    model = make_model(n_superblocks=1)                   # window: lines BASE .. BASE+7
    high = model.address(View.RAW, BASE) | (1 << (PARAMS.hpa_bits - PARAMS.line_offset_bits))
    cases = [model.address(View.RAW, BASE - 1), model.address(View.RAW, BASE + 8), high]
    for poison in (False, True):
        for nxm_opcode in (False, True):
            model.csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON * poison | CONTROL_MEM_DATA_NXM * nxm_opcode)
            for opcode in (ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA, ReqOpcode.MEM_RD_TEE, ReqOpcode.MEM_RD_DATA_TEE):
                for address in cases:
                    assert is_nxm(model.req(opcode, address, 3)[0], poison=poison, nxm_opcode=nxm_opcode)
    assert model.counter(Counter.NXM_READS) == 4 * 4 * len(cases)
    for view in (6, 7):                                   # reserved views: holes of the region, never NXM
        assert is_hole(model.req(ReqOpcode.MEM_RD, model.address(view, BASE), 3)[0])
    assert model.counter(Counter.HOLE_READS) == 2 and model.counter(Counter.NXM_READS) == 4 * 4 * len(cases)
    assert model.counter(Counter.POISON_READS) == 0 and model.counter(Counter.DRAM_LINES_READ) == 0


def test_region_with_a_base_not_aligned_to_b_lines_is_inactive():
    """An R = 1 block is one burst of up to B lines: a base off a B-line boundary could cross 4 KiB."""
    model = DeviceModel(PARAMS, MEMORY_BYTES)
    model.program(region_csr_writes(PARAMS, 0, BASE + 4, 1, Format.INT, 8, 1, 4, Rounding.FLOOR))
    assert is_nxm(read(model, View.RAW, BASE + 4))
    assert model.csr_read(CSR_REGION_BASE + 8) & 1 == 1      # CONFIG reads back as written
    model.csr_write(CSR_REGION_BASE, BASE + 8)
    assert read(model, View.RAW, BASE + 8).opcode == DrsOpcode.MEM_DATA


def test_illegal_k_and_packed_line_past_k():
    model = make_model(B=8, default_k=0)
    for view, k, line in [(View.PACKED_K, 0, BASE), (View.PACKED_K, 9, BASE), (View.EXPANDED_K, 9, BASE),
                          (View.PACKED_DEFAULT, 0, BASE), (View.EXPANDED_DEFAULT, 0, BASE),
                          (View.PACKED_K, 3, BASE + 3), (View.PACKED_K, 3, BASE + 7)]:
        assert is_hole(read(model, view, line, k=k))
    model.csr_write(CSR_CONTROL, CONTROL_HOLE_POISON)     # a host may ask for poison on holes
    assert is_hole(read(model, View.PACKED_K, BASE + 3, k=3), poison=True)
    model.csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON)   # decode-error poison does not reach holes
    assert is_hole(read(model, View.PACKED_K, BASE + 3, k=3))
    assert model.counter(Counter.HOLE_READS) == 9 and model.counter(Counter.NXM_READS) == 0
    assert model.counter(Counter.POISON_READS) == 0
    assert model.counter(Counter.BUFFER_MISSES) == 0 and model.axi_bursts == []
    # views 0 and 1 ignore the k field
    assert not is_nxm(read(model, View.RAW, BASE, k=31)) and not is_nxm(read(model, View.WEIGHT_MAJOR, BASE, k=31))


def test_dropped_and_unmapped_writes():
    model = make_model(n_superblocks=1)
    before = model.memory.copy()
    for view in (View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT, 6, 7):
        write(model, view, BASE, b"\xff" * 64)
    write(model, View.RAW, BASE + 8, b"\xff" * 64)              # past the window
    write(model, View.WEIGHT_MAJOR, 0, b"\xff" * 64)            # below it
    assert np.array_equal(model.memory, before) and model.axi_bursts == []
    assert model.counter(Counter.WR_DROPPED) == 6 and model.counter(Counter.NXM_WRITES) == 2
    assert model.counter(Counter.NDR_SENT) == 8


def test_every_cxl31_opcode_gets_its_response():
    """CXL 3.1 Req and RwD opcodes (DEVICE.md §4): MemSpecRd(TEE), MemRdFwd and MemWrFwd get no response, the
    TEE-intent reads a DRS like MemRd / MemRdData, TEUpdate and reserved opcodes an NDR Cmp, the TEE-intent
    writes write, MemRdFill(TEE) on RwD reads like MemRd. Regression: MemRdTEE / MemRdDataTEE / MemRdFill were
    answered Cmp, MemSpecRdTEE got a Cmp."""
    model = make_model()
    raw = model.address(View.RAW, BASE)
    for opcode in (ReqOpcode.MEM_SPEC_RD, ReqOpcode.MEM_SPEC_RD_TEE, ReqOpcode.MEM_RD_FWD, ReqOpcode.MEM_WR_FWD):
        assert model.req(opcode, raw, 1) == []
    for opcode in (ReqOpcode.MEM_INV, ReqOpcode.MEM_INV_NT, ReqOpcode.MEM_CLN_EVCT, ReqOpcode.TE_UPDATE, 0b0111,
                   0b1011, 0b1110, 0b1111):
        (response,) = model.req(opcode, raw, 9, ld_id=2)
        assert (response.channel, response.opcode, response.tag, response.ld_id) == ("ndr", NdrOpcode.CMP, 9, 2)
    line = data_bytes(read(model, View.RAW, BASE))
    for opcode in (ReqOpcode.MEM_RD_TEE, ReqOpcode.MEM_RD_DATA_TEE):
        (response,) = model.req(opcode, raw, 5)
        assert (response.channel, response.opcode, response.tag) == ("drs", DrsOpcode.MEM_DATA, 5)
        assert np.array_equal(data_bytes(response), line)
    for opcode in (RwdOpcode.MEM_RD_FILL, RwdOpcode.MEM_RD_FILL_TEE):    # RwD data and poison are ignored
        (response,) = model.rwd(opcode, raw, 6, (1 << 512) - 1, ALL_BYTES, 1, ld_id=3)
        assert (response.channel, response.opcode, response.tag, response.ld_id, response.poison) == (
            "drs", DrsOpcode.MEM_DATA, 6, 3, 0)
        assert np.array_equal(data_bytes(response), line)
    before = model.memory.copy()
    for opcode in (0b0000, 0b0011, 0b1111, RwdOpcode.BI_CONFLICT):
        (response,) = model.rwd(opcode, raw, 4, 1, ALL_BYTES, 0)
        answer = NdrOpcode.BI_CONFLICT_ACK if opcode == RwdOpcode.BI_CONFLICT else NdrOpcode.CMP
        assert (response.channel, response.opcode, response.tag) == ("ndr", answer, 4)
    assert np.array_equal(model.memory, before)
    write(model, View.RAW, BASE, b"\x11" * 64, opcode=RwdOpcode.MEM_WR_TEE)
    assert np.array_equal(data_bytes(read(model, View.RAW, BASE)), np.full(64, 0x11, np.uint8))
    write(model, View.RAW, BASE, b"\x22" * 64, opcode=RwdOpcode.MEM_WR_PTL_TEE, byte_enable=0xFF)
    assert np.array_equal(data_bytes(read(model, View.RAW, BASE)), np.array([0x22] * 8 + [0x11] * 56, np.uint8))
    counts = model.counters
    assert (counts["req_mem_spec_rd"], counts["req_mem_inv"], counts["req_mem_inv_nt"], counts["req_mem_cln_evct"],
            counts["req_bad_opcode"], counts["rwd_bad_opcode"]) == (2, 1, 1, 1, 7, 4)
    assert (counts["req_mem_rd"], counts["req_mem_rd_data"], counts["rwd_mem_wr"], counts["rwd_mem_wr_ptl"]) == (
        4, 1, 1, 1)
    assert counts["rwd_mem_rd_fill"] == 2 and counts["poison_writes"] == 0 and counts["raw_reads"] == 7
    assert counts["ndr_sent"] == 8 + 4 + 2 and counts["drs_sent"] == 7


# --- partial writes ----------------------------------------------------------------------------------------
def test_mem_wr_ptl_honours_whole_weight_groups_only():
    model = make_model(B=8, R=1)
    j = 2
    enables = 0xFF | (0b111 << 8) | (0xFF << 56)      # group 0 full, group 1 partial, group 7 full
    write(model, View.WEIGHT_MAJOR, BASE + j, bytes(range(1, 65)), opcode=RwdOpcode.MEM_WR_PTL,
          byte_enable=enables)
    assert model.axi_writes == [] and model.gather is not None          # gathered: no DRAM write yet
    model.flush_writes("idle")                                          # the device's idle boundary
    strobe = (1 << (j * 8 + 0)) | (1 << (j * 8 + 7))   # plane byte j*W/(8B) + group
    assert model.axi_writes == [WriteBurst(BASE, 8, (strobe,) * 8)]
    assert model.counter(Counter.WR_PARTIAL_GROUPS) == 1
    assert model.counter(Counter.BYTES_STROBED) == 16 and model.counter(Counter.DRAM_LINES_WRITTEN) == 8
    got = data_bytes(read(model, View.WEIGHT_MAJOR, BASE + j))
    expected = np.zeros(64, np.uint8)
    expected[0:8] = np.arange(1, 9)
    expected[56:64] = np.arange(57, 65)
    assert np.array_equal(got, expected)


def test_raw_mem_wr_ptl_strobes_bytes():
    model = make_model()
    model.load_raw(BASE, np.full((1, 64), 0xAA, np.uint8))
    write(model, View.RAW, BASE, b"\x55" * 64, opcode=RwdOpcode.MEM_WR_PTL, byte_enable=0b1001)
    got = data_bytes(read(model, View.RAW, BASE))
    assert list(got[:4]) == [0x55, 0xAA, 0xAA, 0x55] and set(got[4:]) == {0xAA}
    write(model, View.RAW, BASE, b"\x00" * 64, opcode=RwdOpcode.MEM_WR_PTL, byte_enable=0)
    assert model.axi_writes[-1] == WriteBurst(BASE, 1, (0,))
    assert model.counter(Counter.BYTES_STROBED) == 2 and model.counter(Counter.DRAM_LINES_WRITTEN) == 2


# --- poison ------------------------------------------------------------------------------------------------
def test_poisoned_raw_write_poisons_its_line_and_the_reads_that_fetch_it():
    """Poison is per DRAM line (DEVICE.md §4). Regression: a poisoned raw write poisoned its whole block, so a
    read of the block's other planes (and a raw read of another plane line) returned poison."""
    model = make_model(B=4, R=4, n_superblocks=1)        # plane p of block b: line BASE + p*4 + b
    write(model, View.RAW, BASE + 2 * 4 + 3, b"\x0f" * 64, poison=1)   # plane 2 of block 3
    assert model.poisoned_lines() == {BASE + 11}
    assert read(model, View.RAW, BASE + 0 * 4 + 3).poison == 0          # plane 0 of block 3
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=2).poison == 0     # planes 0, 1 of block 3
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=3).poison == 1     # planes 0..2
    assert read(model, View.WEIGHT_MAJOR, BASE + 3 * 4 + 1).poison == 1  # k = B
    assert read(model, View.RAW, BASE + 2 * 4 + 3).poison == 1
    assert read(model, View.WEIGHT_MAJOR, BASE + 2 * 4).poison == 0     # block 2
    assert model.counter(Counter.POISON_WRITES) == 1 and model.counter(Counter.POISON_READS) == 3


def test_a_write_that_covers_a_line_clears_its_poison():
    """Regression: writes never cleared poison. A raw MemWr (or MemWrPtl with every byte enabled) of a line
    drops it from every record; a partial write does not; a whole weight-major rewrite of a block (every plane
    line written whole, nothing poisoned) drops its B plane lines."""
    model = make_model(B=4, R=4, n_superblocks=1)
    write(model, View.WEIGHT_MAJOR, BASE + 1 * 4, bytes(64), poison=1)   # block 1: lines 33, 37, 41, 45
    model.flush_writes("idle")
    assert model.poisoned_lines() == {BASE + 1, BASE + 5, BASE + 9, BASE + 13}
    write(model, View.RAW, BASE + 5, bytes(64), opcode=RwdOpcode.MEM_WR_PTL, byte_enable=ALL_BYTES >> 1)
    assert BASE + 5 in model.poisoned_lines()
    write(model, View.RAW, BASE + 5, bytes(64), opcode=RwdOpcode.MEM_WR_PTL, byte_enable=ALL_BYTES)
    assert model.poisoned_lines() == {BASE + 1, BASE + 9, BASE + 13}
    assert read(model, View.PACKED_K, BASE + 1 * 4, k=1).poison == 1
    write(model, View.RAW, BASE + 1, bytes(64))                           # MemWr of plane 0
    assert read(model, View.PACKED_K, BASE + 1 * 4, k=2).poison == 0     # planes 0, 1 are clean now
    assert read(model, View.PACKED_K, BASE + 1 * 4, k=3).poison == 1
    # a partial weight-major rewrite clears nothing; a whole one clears the block's four plane lines
    write(model, View.WEIGHT_MAJOR, BASE + 1 * 4, bytes(64))
    model.flush_writes("idle")
    assert model.poisoned_lines() == {BASE + 9, BASE + 13}
    for j in range(4):
        write(model, View.WEIGHT_MAJOR, BASE + 1 * 4 + j, bytes(64))
    assert model.gather is None                                           # B lines: flushed
    assert model.poisoned_lines() == set() and model.csr_read(CSR_POISON_COUNT) == 0
    # the same whole rewrite with one poisoned line: the block stays poisoned (its record is new)
    for j in range(4):
        write(model, View.WEIGHT_MAJOR, BASE + 1 * 4 + j, bytes(64), poison=int(j == 2))
    assert model.poisoned_lines() == {BASE + 1, BASE + 5, BASE + 9, BASE + 13}


def test_poison_csrs_inject_list_and_clear():
    """POISON_LINE / POISON_COMMAND inject and clear one line; the list reads back record by record
    (DEVICE.md §6). A line injected by DPA poisons the packed read at a k whose planes include it."""
    model = make_model(B=8, R=2, n_superblocks=2, default_k=3)    # plane p of block b = 2s + r: 32 + 16s + 2p + r
    line = BASE + 16 * 1 + 2 * 2 + 1                               # block 3, plane 2
    model.csr_write(CSR_POISON_LINE, line)
    model.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
    assert read(model, View.PACKED_K, BASE + 3 * 8, k=2).poison == 0
    assert read(model, View.PACKED_K, BASE + 3 * 8 + 2, k=3).poison == 1
    assert read(model, View.PACKED_DEFAULT, BASE + 3 * 8).poison == 1    # default k = 3
    assert read(model, View.EXPANDED_K, BASE + 2 * 8, k=8).poison == 0   # block 2
    model.csr_write(CSR_POISON_LIST_INDEX, 0)
    assert model.csr_read(CSR_POISON_LIST_LINE) == line
    assert model.csr_read(CSR_POISON_LIST_ENTRY) == 1 | POISON_ENTRY_VALID
    assert model.csr_read(CSR_POISON_COUNT) == 1
    model.csr_write(CSR_POISON_COMMAND, 3)                                # not a command: nothing
    assert model.csr_read(CSR_POISON_COUNT) == 1
    model.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_CLEAR)
    assert model.csr_read(CSR_POISON_COUNT) == 0 and model.csr_read(CSR_POISON_LIST_ENTRY) == 0
    assert read(model, View.PACKED_K, BASE + 3 * 8 + 2, k=3).poison == 0


def test_backend_read_errors_poison_every_line_served_from_the_fetch():
    model = make_model(B=4, R=2, n_superblocks=2, default_k=2)     # block b: superblock b // 2, slot b % 2
    model.inject_read_error(BASE + 1 * 8 + 1 * 2 + 1)     # plane 1 of block 3 (superblock 1, slot 1)
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=1).poison == 0     # k = 1 never touches plane 1
    assert model.counter(Counter.AXI_ERRORS) == 0
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=2).poison == 1     # miss: the fetch meets the error
    assert read(model, View.PACKED_K, BASE + 3 * 4 + 1, k=2).poison == 1     # hit on the poisoned slot
    assert model.counter(Counter.AXI_ERRORS) == 1 and model.counter(Counter.BUFFER_HITS) == 1
    assert read(model, View.RAW, BASE + 1 * 8 + 1 * 2 + 1).poison == 1   # the raw line itself
    assert read(model, View.RAW, BASE + 1 * 8 + 0 * 2 + 1).poison == 0   # plane 0 of the same block reads fine
    assert read(model, View.EXPANDED_K, BASE + 2 * 4, k=4).poison == 0   # block 2
    assert model.counter(Counter.AXI_ERRORS) == 2 and model.counter(Counter.POISON_READS) == 3
    model.clear_backend_errors()
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=2).poison == 1     # still the poisoned slot (a hit)
    read(model, View.PACKED_K, BASE, k=2)
    read(model, View.PACKED_K, BASE + 4, k=2)                            # two misses evict it (2 slots)
    assert read(model, View.PACKED_K, BASE + 3 * 4, k=2).poison == 0     # refetched without error
    assert model.counter(Counter.AXI_ERRORS) == 2


def test_backend_write_error_enters_the_block_in_the_poison_list():
    model = make_model(B=4, R=2, n_superblocks=2)
    model.inject_write_error(BASE + 0 * 8 + 3 * 2 + 0)    # plane 3 of block 0
    write(model, View.WEIGHT_MAJOR, BASE + 0 * 4 + 1, b"\x11" * 64)
    model.flush_writes("idle")                      # the idle boundary: 4 one-beat bursts, one answers SLVERR
    assert model.counter(Counter.AXI_ERRORS) == 1 and model.counter(Counter.POISON_WRITES) == 0
    assert model.poison_list[0] == PoisonRecord(BASE, 1, 0b1111)        # the block's 4 plane lines, stride R
    assert read(model, View.RAW, BASE).poison == 1 and read(model, View.PACKED_K, BASE, k=1).poison == 1
    write(model, View.RAW, BASE + 1, b"\x22" * 64)                    # block 1: no error
    assert read(model, View.RAW, BASE + 1).poison == 0 and model.counter(Counter.AXI_ERRORS) == 1
    model.csr_write(CSR_CONTROL, CONTROL_CLEAR_POISON)
    assert read(model, View.RAW, BASE).poison == 0


def test_poison_overflow_rule_and_clearing():
    """A record the full list cannot take is flagged (STATUS.poison_overflow) and counted
    (DeviceModel.poisons_lost), and poisons nothing else. Regression: an overflow poisoned every read."""
    model = make_model(B=8, n_superblocks=4)             # PARAMS.poison_entries = 2
    for block in (0, 0, 1):                              # the repeated block merges into its record
        write(model, View.WEIGHT_MAJOR, BASE + 8 * block, bytes(64), poison=1)
    assert model.csr_read(CSR_STATUS) == 0 and model.poison_events["merge"] == 1
    assert read(model, View.RAW, BASE + 8 * 2).poison == 0
    write(model, View.WEIGHT_MAJOR, BASE + 8 * 2, bytes(64), poison=1)   # third block: overflow
    write(model, View.WEIGHT_MAJOR, BASE + 8 * 2, bytes(64), poison=1)   # lost again: counted again
    assert model.csr_read(CSR_STATUS) & 1 and model.poisons_lost == 2
    assert [read(model, View.RAW, BASE + 8 * block).poison for block in range(4)] == [1, 1, 0, 0]
    assert is_nxm(read(model, View.RAW, 0))               # decode errors keep their answer
    model.csr_write(CSR_CONTROL, CONTROL_CLEAR_POISON)
    assert model.csr_read(CSR_STATUS) == 0 and model.csr_read(CSR_CONTROL) == 0
    assert not any(read(model, View.RAW, BASE + 8 * block).poison for block in range(4))
    # a region CONFIG rewrite keeps poison (it belongs to DRAM lines, not to the region table)
    write(model, View.WEIGHT_MAJOR, BASE, bytes(64), poison=1)
    model.csr_write(CSR_REGION_BASE + 8, model.csr_read(CSR_REGION_BASE + 8))
    assert read(model, View.RAW, BASE).poison == 1
    # the running totals the scoreboard tests for a change every cycle follow the counts by kind
    assert model.poison_event_count == sum(model.poison_events.values()) >= 8
    assert model.gather_flush_count == sum(model.gather_flushes.values()) >= 3


# --- block buffer ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("view,k,lines_per_block", [(View.PACKED_K, 3, 3), (View.EXPANDED_K, 3, 8),
                                                    (View.WEIGHT_MAJOR, 0, 8)])
def test_sequential_streaming_hits(view, k, lines_per_block):
    n_blocks = 6
    model = make_model(B=8, R=2, n_superblocks=n_blocks // 2)
    for block in range(n_blocks):
        for j in range(lines_per_block):
            read(model, view, BASE + 8 * block + j, k=k)
    precision = k or 8
    lines = n_blocks * lines_per_block
    assert model.counter(Counter.BUFFER_MISSES) == n_blocks
    assert model.counter(Counter.BUFFER_HITS) == lines - n_blocks
    assert model.counter(Counter.DRAM_LINES_READ) == n_blocks * precision
    assert model.counter(Counter.READ_BURSTS) == n_blocks * precision     # R > 1: single-line bursts
    assert model.counter(Counter.READS_AT_K1 + precision - 1) == lines


def test_round_robin_victims_over_misses():
    model = make_model(B=8, n_superblocks=3)             # buffer_slots = 2
    hits = []
    for block in (0, 1, 0, 2, 0, 1):
        before = model.counter(Counter.BUFFER_HITS)
        read(model, View.PACKED_K, BASE + 8 * block, k=2)
        hits.append(model.counter(Counter.BUFFER_HITS) - before)
    # block 2 evicts slot 0 (block 0) although block 0 was just used: round robin, not LRU
    assert hits == [0, 0, 1, 0, 0, 0]


def test_key_separates_mode_and_k():
    model = make_model(B=8)
    read(model, View.PACKED_K, BASE, k=8)
    read(model, View.WEIGHT_MAJOR, BASE)                 # expanded at k = B: another key
    read(model, View.PACKED_K, BASE + 1, k=8)            # hit
    assert (model.counter(Counter.BUFFER_MISSES), model.counter(Counter.BUFFER_HITS)) == (2, 1)


def test_writes_and_region_writes_invalidate_buffer():
    model = make_model(B=8, n_superblocks=2)
    read(model, View.PACKED_K, BASE, k=1)
    read(model, View.PACKED_K, BASE + 8, k=1)
    write(model, View.RAW, BASE, b"\xff" * 64)           # plane 0 of block 0
    assert data_bytes(read(model, View.PACKED_K, BASE, k=1)).tolist() == [0xFF] * 64     # refetched
    assert read(model, View.PACKED_K, BASE + 8, k=1).data == 0                           # block 1 still hit
    assert (model.counter(Counter.BUFFER_MISSES), model.counter(Counter.BUFFER_HITS)) == (3, 1)
    model.csr_write(CSR_REGION_BASE + 4, 2)              # REGION_SUPERBLOCKS rewrite, same value
    read(model, View.PACKED_K, BASE + 8, k=1)
    assert model.counter(Counter.BUFFER_MISSES) == 4


# --- counters of a short trace -----------------------------------------------------------------------------
def test_counters_after_short_trace_by_hand():
    model = make_model(B=8, R=1)
    write(model, View.WEIGHT_MAJOR, BASE + 3, bytes(range(64)))     # 1 burst of 8 beats, 8 bytes each
    read(model, View.PACKED_K, BASE, k=3)                           # miss: 1 burst of 3 lines
    read(model, View.PACKED_K, BASE + 1, k=3)                       # hit
    read(model, View.PACKED_K, BASE + 2, k=3)                       # hit
    read(model, View.RAW, BASE + 5)                                 # raw: 1 line
    read(model, View.RAW, 0)                                        # unmapped
    model.req(ReqOpcode.MEM_SPEC_RD, model.address(View.RAW, BASE), 1)
    model.req(ReqOpcode.MEM_INV, model.address(View.RAW, BASE), 1)
    expected = {name: 0 for name in model.counters}
    expected.update(rwd_mem_wr=1, req_mem_rd=5, req_mem_spec_rd=1, req_mem_inv=1, drs_sent=5, ndr_sent=2,
                    dram_lines_read=4, dram_lines_written=8, bytes_strobed=64, read_bursts=2, write_bursts=1,
                    buffer_hits=2, buffer_misses=1, nxm_reads=1, raw_reads=1, reads_at_k3=3)
    assert model.counters == expected
    assert set(model.counters) == {counter_name(n) for n in PREDICTED_COUNTERS}
    assert sum(b.beats for b in model.axi_reads) == expected["dram_lines_read"]
    assert model.backend_lines().tolist() == [BASE + p for p in range(8)] + [BASE, BASE + 1, BASE + 2, BASE + 5]


# --- helpers and bad input ---------------------------------------------------------------------------------
def test_superblocks_for():
    assert superblocks_for(512, 8, 1, 512) == 1
    assert superblocks_for(513, 8, 1, 512) == 2
    assert superblocks_for(5 * 512, 8, 4, 512) == 2
    assert superblocks_for(0, 8, 4, 512) == 1


def test_bad_input_is_a_clear_error():
    model = make_model()
    with pytest.raises(SmartquantError):
        model.req(ReqOpcode.MEM_RD, 0, 1 << 16)                           # tag too wide
    with pytest.raises(SmartquantError):
        model.rwd(RwdOpcode.MEM_WR, 0, 1, 1 << 512, ALL_BYTES, 0)         # data too wide
    with pytest.raises(SmartquantError):
        model.load_raw(1023, np.zeros((2, 64), np.uint8))                 # past the model memory
    with pytest.raises(SmartquantError):
        DeviceModel(PARAMS, 100)                                          # not whole lines
    with pytest.raises(SmartquantError):
        region_csr_writes(PARAMS, 4, 0, 1, Format.INT, 8, 1, 8, 0)        # no region 4
    far = make_model(n_superblocks=1)
    far.program(region_csr_writes(PARAMS, 1, 4096, 1, Format.INT, 8, 1, 8, 0))
    with pytest.raises(SmartquantError):
        read(far, View.RAW, 4096)                                         # mapped, but beyond memory_bytes


@pytest.mark.parametrize("B,R,fmt", [(2, 1, Format.INT), (4, 4, Format.INT), (8, 2, Format.INT),
                                     (16, 1, Format.BF16), (16, 4, Format.INT)])
def test_every_view_matches_reference_codec(B, R, fmt):
    """A tensor loaded raw (layout.encode) reads back through every view as the reference codec's lines."""
    rng = np.random.default_rng(B * 100 + R)
    n_weights = 512 * 2 * R - 100                      # two superblocks, the last block padded
    if fmt == Format.BF16:
        weights = rng.standard_normal(n_weights).astype(np.float32)
    else:
        weights = rng.integers(-(1 << (B - 1)), 1 << (B - 1), n_weights)
    n_superblocks = superblocks_for(n_weights, B, R, 512)
    model = make_model(B=B, R=R, n_superblocks=n_superblocks, fmt=fmt, default_k=B // 2, rounding=Rounding.MIDPOINT)
    raw = layout.encode(weights, B, fmt, R)
    model.load_raw(BASE, raw)
    blocks = layout.to_blocks(layout.fields_of(weights, B, fmt), 512, R)
    for k in sorted({1, B // 2, B - 1, B}):
        packed = layout.packed_lines(blocks, B, k)
        expanded = layout.expanded_lines(blocks, B, k, Rounding.MIDPOINT)
        for block in (0, len(blocks) - 1):
            for j in range(B):
                line = BASE + block * B + j
                if j < k:
                    assert np.array_equal(data_bytes(read(model, View.PACKED_K, line, k=k)), packed[block, j])
                assert np.array_equal(data_bytes(read(model, View.EXPANDED_K, line, k=k)), expanded[block, j])
    for line in range(len(raw)):
        assert np.array_equal(data_bytes(read(model, View.RAW, BASE + line)), raw[line])
    # weight-major writes of the same tensor rebuild the same raw image
    rewritten = make_model(B=B, R=R, n_superblocks=n_superblocks, fmt=fmt)
    weight_major = layout.weight_major_lines(blocks, B)
    for block in range(len(blocks)):
        for j in range(B):
            write(rewritten, View.WEIGHT_MAJOR, BASE + block * B + j, weight_major[block, j].tobytes())
    assert np.array_equal(rewritten.memory[BASE:BASE + len(raw)], raw)


def test_counters_wrap_at_32_bits():
    model = make_model()
    model.counts[Counter.NXM_READS] = 0xFFFF_FFFF
    read(model, View.RAW, 0)
    assert model.counter(Counter.NXM_READS) == 0


def test_timing_counter_bounds():
    model = make_model(B=8)
    read(model, View.PACKED_K, BASE, k=5)                # 5 R beats, 1 DRS
    write(model, View.RAW, BASE, bytes(64))              # 1 W beat, 1 NDR
    assert model.timing_counter_violations(busy_cycles=20, stall_cycles=3, elapsed_cycles=100) == []
    assert len(model.timing_counter_violations(busy_cycles=4, stall_cycles=0, elapsed_cycles=100)) == 1
    assert len(model.timing_counter_violations(busy_cycles=20, stall_cycles=21, elapsed_cycles=100)) == 1
    assert len(model.timing_counter_violations(busy_cycles=120, stall_cycles=0, elapsed_cycles=100)) == 1


def test_csr_write_strobes_merge_bytes():
    model = DeviceModel(PARAMS, MEMORY_BYTES)
    base = CSR_REGION_BASE
    model.csr_write(base, 0x0012_3456)
    model.csr_write(base, 0x00AB_CDEF, strobe=0b0001)           # only byte 0 changes
    assert model.csr_read(base) == 0x0012_34EF
    model.csr_write(base, 0xFFFF_FFFF)                          # keeps the 26 line-address bits of 2**32 bytes
    assert model.csr_read(base) == (1 << 26) - 1
    model.csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON, strobe=0b0010)   # CONTROL needs byte 0
    assert model.csr_read(CSR_CONTROL) == 0
    config = base + 8
    illegal = region_config_word(enable=True, fmt=Format.INT, B=8, R=1, default_k=8, rounding=0) | (3 << 12)
    model.csr_write(config, illegal)
    model.csr_write(config, 0, strobe=0b0010)                   # byte 1 (rounding, k[4:1]) zeroed, byte 0 kept
    assert model.csr_read(config) == illegal & 0xFE             # legal now, but the stored enable stays 0


def test_golden_model_stands_apart_from_the_rtl_and_the_workloads():
    """The device golden model (golden/) loads without the HDL, Amaranth or the workload code."""
    import subprocess
    import sys
    code = ("import sys, smartquant.golden.device, smartquant.golden.layout, smartquant.golden.dram, "
            "smartquant.golden.energy; print(sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth' "
            "or m.startswith(('smartquant.hdl', 'smartquant.workloads', 'smartquant.sim'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("data_width", [128, 512])
def test_block_assembly_equals_the_layout_functions(data_width):
    """DeviceModel._assemble builds packed-k and expanded-k lines on plane bits (a fast path); it must equal
    layout.packed_lines / expanded_lines of layout.planes_to_blocks for every B, k, fill rule and format."""
    from smartquant.golden.device import EXPANDED, PACKED, RegionConfig
    rng = np.random.default_rng(data_width)
    line_bytes = data_width // 8
    for B in (2, 4, 8, 16):
        for fmt in (Format.INT, Format.BF16) if B == 16 else (Format.INT,):
            for rounding in (Rounding.FLOOR, Rounding.MIDPOINT, Rounding.TOWARD_ZERO):
                config = RegionConfig(enable=True, fmt=fmt, B=B, R=1, default_k=B, rounding=rounding, legal=True)
                for k in range(1, B + 1):
                    planes = rng.integers(0, 256, size=(k, line_bytes), dtype=np.uint8)
                    fields = layout.planes_to_blocks(planes[None], B, k)
                    packed = DeviceModel._assemble(planes, config, PACKED, k)
                    expanded = DeviceModel._assemble(planes, config, EXPANDED, k)
                    assert np.array_equal(packed, layout.packed_lines(fields, B, k)[0]), (B, k)
                    assert np.array_equal(expanded, layout.expanded_lines(fields, B, k, rounding, fmt)[0]), \
                        (B, k, rounding, fmt)


def test_region_rewrite_changes_the_decode_of_an_address_read_before():
    """read_target is memoised per address: a region register write must make the next read see the new
    table (base, size and config each)."""
    model = make_model(B=8, R=1, n_superblocks=1)
    address = model.address(View.RAW, BASE + 8)           # one past the single superblock: unmapped
    assert model.read_target(address) is None
    model.csr_write(CSR_REGION_BASE + 4, 2)                # two superblocks: now mapped
    target = model.read_target(address)
    assert target is not None and target.mapped and target.L == 8
    model.csr_write(CSR_REGION_BASE + 0, BASE + 8)         # moved: the same line is now L = 0
    assert model.read_target(address).L == 0
    model.csr_write(CSR_REGION_BASE + 8, 0)                # disabled
    assert model.read_target(address) is None


@pytest.mark.parametrize("data_width", [128, 512])
def test_weight_major_line_planes_equal_the_layout_functions(data_width):
    """DeviceModel._line_planes (the planes a weight-major write stores) must equal layout.block_planes of
    layout.unpack_fields of the line, for every B."""
    rng = np.random.default_rng(data_width + 1)
    for B in (2, 4, 8, 16):
        if data_width % (8 * B):
            continue
        for _ in range(4):
            line = rng.integers(0, 256, size=data_width // 8, dtype=np.uint8)
            fields = layout.unpack_fields(line[None], B, data_width // B)
            assert np.array_equal(DeviceModel._line_planes(line, B), layout.block_planes(fields, B)[0]), B


# --- write gathering (DEVICE.md §4) ------------------------------------------------------------------------
def test_gather_flush_causes_by_hand():
    """INT4, R = 1, W = 512: a weight-major line j fills plane bytes [16j, 16j + 16) of each of the 4 plane
    lines. Each flush cause writes the gathered block as one burst of 4 beats whose WSTRB covers exactly the
    lines gathered: another block's line (evict), a raw write (evict), the 4th line (full), a region-table write
    (csr), a read of the block (read, which then sees the data), the idle boundary (idle)."""
    model = make_model(B=4, R=1, n_superblocks=8)
    rng = np.random.default_rng(11)
    lines = {}

    def wm(block, j):
        lines[block, j] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        write(model, View.WEIGHT_MAJOR, BASE + 4 * block + j, lines[block, j])

    def slices(*js):
        return sum(0xFFFF << (16 * j) for j in js)

    wm(0, 0)
    wm(0, 1)
    assert model.axi_writes == []
    wm(1, 2)                                                            # evict block 0
    assert model.axi_writes == [WriteBurst(BASE, 4, (slices(0, 1),) * 4)]
    write(model, View.RAW, BASE + 4 * 5, b"\x33" * 64)                  # evict block 1, then the raw line
    assert model.axi_writes[1:] == [WriteBurst(BASE + 4, 4, (slices(2),) * 4), WriteBurst(BASE + 20, 1, (ALL_BYTES,))]
    for j in (3, 0, 2, 1):
        wm(2, j)                                                        # the 4th line completes the block
    assert model.axi_writes[3:] == [WriteBurst(BASE + 8, 4, (ALL_BYTES,) * 4)] and model.gather is None
    wm(3, 2)
    model.csr_write(CSR_REGION_BASE, BASE)                              # same base: still a region-table write
    assert model.axi_writes[4:] == [WriteBurst(BASE + 12, 4, (slices(2),) * 4)]
    wm(3, 1)
    got = read(model, View.WEIGHT_MAJOR, BASE + 12 + 1)                 # the read flushes block 3 first
    assert model.axi_writes[5:] == [WriteBurst(BASE + 12, 4, (slices(1),) * 4)]
    assert data_bytes(got).tobytes() == lines[3, 1]
    wm(4, 0)
    model.flush_writes("idle")
    assert model.axi_writes[6:] == [WriteBurst(BASE + 16, 4, (slices(0),) * 4)]
    model.flush_writes("idle")                                          # nothing gathered: nothing written
    assert len(model.axi_writes) == 7
    assert model.gather_flushes == {"evict": 2, "full": 1, "csr": 1, "read": 1, "idle": 1}
    assert model.counter(Counter.DRAM_LINES_WRITTEN) == 6 * 4 + 1
    # every line written reads back (the whole block 2 and the single lines of the others)
    for (block, j), data in lines.items():
        assert data_bytes(read(model, View.WEIGHT_MAJOR, BASE + 4 * block + j)).tobytes() == data, (block, j)


def test_plane_bursts_recorded_at_once_equal_one_record_per_line():
    """A block with R > 1 fetches and flushes its planes as single-line bursts, traced and counted at once
    (_record_line_reads / _record_line_writes): the same trace, counters and error answer as recording each line
    as its own burst, with and without SLVERR lines among them."""
    rng = np.random.default_rng(5)
    for errors in ((), (3, 40), (17,)):
        lines = [3, 19, 35, 51, 67] if errors != (17,) else [1, 17, 33]
        planes = rng.integers(0, 256, (len(lines), PARAMS.line_bytes), dtype=np.uint8)
        strobe = (1 << PARAMS.line_bytes) - 1 if errors else 0x0F0F
        at_once, per_line = DeviceModel(PARAMS, MEMORY_BYTES), DeviceModel(PARAMS, MEMORY_BYTES)
        for model in (at_once, per_line):
            model.read_error_lines.update(errors)
            model.write_error_lines.update(errors)
        answers = (at_once._record_line_reads(lines), at_once._record_line_writes(lines, planes, strobe))
        expected = (any([per_line._record_read(line, 1) for line in lines]),
                    any([per_line._record_write(line, planes[i:i + 1], [strobe]) for i, line in enumerate(lines)]))
        assert answers == expected == (bool(errors), bool(errors))
        assert at_once.axi_bursts == per_line.axi_bursts and at_once.counts == per_line.counts
        assert [burst.data for burst in at_once.axi_bursts[len(lines):]] == [row.tobytes() for row in planes]
