"""CSR block: the AXI4-Lite register file of docs/DEVICE.md §6 (identity, control, status, region table, counters).

Register map (byte addresses, 32-bit registers; smartquant.params holds the constants):
    0x000 ID        RO  0x5351_4D43 ("SQMC")
    0x004 VERSION   RO  0x0001_0000
    0x008 PARAMS    RO  [7:0] data_width/8, [12:8] b_max, [17:13] n_regions, [21:18] buffer_slots,
                        [27:22] dram_addr_bits
    0x00C CONTROL   RW  [0] nxm_as_poison (poison on decode error), [3] mem_data_nxm (the host accepts
                        MemData-NXM), [4] hole_poison; writing 1 to [1] clears every counter, to [2] clears the
                        poison list and its overflow flag. Bits 1 and 2 act on the write and read back 0.
    0x010 STATUS    RO  [0] poison_overflow, [1] busy
    0x014 POISON_LINE       RW  the DRAM line (DPA >> log2(line bytes)) POISON_COMMAND acts on
    0x018 POISON_COMMAND    WO  byte 0: 1 inject (a one-line poison record), 2 clear the line; reads 0
    0x01C POISON_LIST_INDEX RW  record i shown by the next two registers
    0x020 POISON_LIST_LINE  RO  record i's first line F
    0x024 POISON_LIST_ENTRY RO  [15:0] line mask, [18:16] log2 stride, [31] valid (all 0 for a free record)
    0x028 POISON_COUNT      RO  records in use
    0x100+0x10*i    REGION_BASE(i)         RW  base line index (DPA >> log2(line bytes))
    0x104+0x10*i    REGION_SUPERBLOCKS(i)  RW  n_superblocks
    0x108+0x10*i    REGION_CONFIG(i)       RW  [0] enable, [1] format, [3:2] log2(B)-1, [6:4] log2(R),
                                               [11:7] default k, [13:12] rounding (0 floor, 1 midpoint,
                                               2 toward zero)
    0x400+4*n       COUNTER(n)             RO  32-bit wrapping event counter n (smartquant.params.Counter)

Choices this block makes where DEVICE.md leaves room (so the testbench and the golden model can rely on them):
- Unknown or unimplemented addresses (including reserved counters 29..31 and regions >= n_regions) read 0 and
  ignore writes, with response OKAY: a CXL.io BAR read of a hole must not raise an error on the host.
  The two low address bits are ignored (word registers).
- WSTRB is honoured per byte on the RW registers; a CONTROL action bit acts only if byte 0 is strobed.
- REGION_CONFIG legality is checked when the register is written: BF16 with B != 16, B > b_max, rounding 3,
  and log2(R) = 7 (R = 128 is beyond the 1..64 plane run of the spec) store enable = 0, so the region stays
  disabled and enable reads back 0; the other fields read back as written. A default k outside 1..B is stored
  as written (views 4 and 5 then answer as illegal k, which the address decode handles).
- The region entry (hdl/csr/layouts.py) carries rounding as its `midpoint` bit (rounding[0]); rounding 2 (toward
  zero) is the separate output `toward_zero`, bit i for region i, so the entry layout the address decode and
  the write path use is unchanged.
- REGION_BASE and REGION_SUPERBLOCKS keep min(32, line bits) bits; higher written bits read back 0.
- The region entries (`regions`, `toward_zero`) are registers updated the cycle after a write acts.
- `regions_written` pulses two cycles after any region-table write acts (base, superblocks or config), with the
  new entries: the read engine invalidates every block-buffer slot. `clear_poison` pulses (also two cycles
  after) a CONTROL write with bit 2 set; region writes leave poison alone (it belongs to DRAM lines).
  `poison_command` pulses one cycle after a POISON_COMMAND write of 1 or 2 (the write path applies it next).
- A counter clear in the same cycle as an increment wins (that cycle's increments are lost): clears are host
  actions between experiments, never racing traffic the golden model has to predict.

AXI4-Lite handshake: AW and W are accepted independently (each held in a one-entry register); the write acts
once both are present and no B response is pending, and its B response is valid two cycles later (the region
end_line derived from the written registers has settled by then); five cycles later for a POISON_COMMAND
inject or clear and three for a CONTROL write that clears the poison list, when the list shows the command on
its CSR read port and to every read (DEVICE.md §6). AR is accepted when no read is in progress; the read
value is sampled at acceptance (a counter reads its value of that cycle) and R is valid two cycles after it.
bresp and rresp are always OKAY.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import (
    ControllerParams, Counter, N_COUNTERS, CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_CONTROL, CSR_STATUS,
    CSR_REGION_BASE, CSR_REGION_STRIDE, CSR_COUNTER_BASE, ID_VALUE, VERSION_VALUE, CONTROL_NXM_AS_POISON,
    CONTROL_CLEAR_COUNTERS, CONTROL_CLEAR_POISON, CONTROL_MEM_DATA_NXM, CONTROL_HOLE_POISON, MAX_PLANE_RUN, Rounding,
    CSR_POISON_LINE, CSR_POISON_COMMAND, CSR_POISON_LIST_INDEX, CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY,
    CSR_POISON_COUNT, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR, poison_index_limit,
)
from smartquant.hdl.backend.axi import AxiLiteSignature, AXI_RESP_OKAY
from smartquant.hdl.csr.layouts import region_entry_layout, region_config_layout
from smartquant.hdl.engine.poison import poison_record_layout
from smartquant.hdl.bits import mux_tree, or_all

# Counter indices that exist in hardware: every params.Counter and the 16 reads_at_k counters (the others,
# 29..31, are reserved and read 0).
IMPLEMENTED_COUNTERS = tuple(n for n in range(N_COUNTERS) if n in Counter.__members__.values() or n >= Counter.READS_AT_K1)

MAX_LOG2_R = MAX_PLANE_RUN.bit_length() - 1


def params_word(params: ControllerParams) -> int:
    """PARAMS register value (DEVICE.md §6)."""
    return ((params.data_width // 8) | (params.b_max << 8) | (params.n_regions << 13)
            | (params.buffer_slots << 18) | (params.dram_addr_bits << 22))


class CsrBlock(wiring.Component):
    """AXI4-Lite CSR subordinate: region table, control/status, event counter bank."""

    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        entry = region_entry_layout(params)
        super().__init__({
            "bus": In(AxiLiteSignature(params.csr_addr_bits, 32)),
            "regions": Out(data.ArrayLayout(entry, params.n_regions)),
            "toward_zero": Out(params.n_regions),   # bit i: region i rounds toward zero (REGION_CONFIG rounding 2)
            "nxm_as_poison": Out(1),
            "mem_data_nxm": Out(1),
            "hole_poison": Out(1),
            "clear_poison": Out(1),
            "regions_written": Out(1),
            "poison_overflow": In(1),
            "poison_command": Out(data.StructLayout({"valid": 1, "clear": 1,
                                                     "line": params.dram_addr_bits - params.line_offset_bits})),
            "poison_list_index": Out(range(poison_index_limit(params))),
            "poison_record": In(poison_record_layout(params)),
            "poison_record_valid": In(1),
            "poison_count": In(range(params.poison_entries + 1)),
            "busy": In(1),
            "counter_inc": In(data.ArrayLayout(unsigned(8), N_COUNTERS)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        bus = self.bus
        addr_bits = p.csr_addr_bits
        line_bits = p.line_bits
        reg_line_bits = min(32, line_bits)

        # --- register state ---------------------------------------------------------------------------------
        nxm_as_poison = Signal()
        mem_data_nxm = Signal()
        hole_poison = Signal()
        region_base = [Signal(reg_line_bits, name=f"region{i}_base") for i in range(p.n_regions)]
        region_superblocks = [Signal(reg_line_bits, name=f"region{i}_superblocks") for i in range(p.n_regions)]
        region_config = [Signal(region_config_layout, name=f"region{i}_config") for i in range(p.n_regions)]
        # log2(R) + log2(B), the region's superblock size in lines as a shift, registered with the config (it
        # changes only when REGION_CONFIG is written), so that the end_line register below starts its shift at
        # a flip-flop, not at an add of two config fields (init: the all-zero config's 0 + 0 + 1)
        region_shift = [Signal(range(1 << 4), init=1, name=f"region{i}_shift") for i in range(p.n_regions)]
        counters = {n: Signal(32, name=f"counter{n}") for n in IMPLEMENTED_COUNTERS}
        poison_line = Signal(reg_line_bits)
        poison_list_index = Signal(range(poison_index_limit(p)))
        m.d.comb += self.poison_list_index.eq(poison_list_index)

        m.d.comb += [self.nxm_as_poison.eq(nxm_as_poison), self.mem_data_nxm.eq(mem_data_nxm),
                     self.hole_poison.eq(hole_poison)]
        for i in range(p.n_regions):
            config = region_config[i]
            out = self.regions[i]
            # a base that is not a multiple of B lines would let an R = 1 block burst cross a 4 KiB boundary
            # (AXI forbids it): such a region stays inactive (CONFIG still reads back as written)
            base_misaligned = (region_base[i] & ((Const(2, 5) << config.log2_b_minus_1) - 1)) != 0
            # The decoded entry is registered from the region registers (so the address decode starts at
            # flip-flops), including end_line = base + n_superblocks * R * B (saturated at the device end): the
            # shift and add stay out of the decode. It settles the cycle after a write acts, which is why a
            # write's B response and the regions_written / clear_poison pulses wait for it (below).
            # min(base + (n_superblocks << shift), 2^lines) without a compare of the full sum: a shifted size of
            # 2^lines or more saturates whatever the base, and below that the sum's carry into bit `lines` says it
            # (base < 2^lines), so the saturation is an OR of bits beside the adder, not a carry chain behind it
            shifted = Signal(reg_line_bits + 15, name=f"region{i}_shifted")
            m.d.comb += shifted.eq(region_superblocks[i] << region_shift[i])
            end_low = Signal(line_bits + 1, name=f"region{i}_end_low")
            m.d.comb += end_low.eq(region_base[i] + shifted[:line_bits])
            saturate = shifted[line_bits:].any() | end_low[line_bits]
            m.d.sync += [
                out.enable.eq(config.enable & ~base_misaligned),
                out.bf16.eq(config.format),
                out.log2_b.eq(config.log2_b_minus_1 + 1),
                out.log2_r.eq(config.log2_r),
                out.default_k.eq(config.default_k),
                out.midpoint.eq(config.rounding[0]),   # MIDPOINT (rounding 3 is illegal: the region is disabled)
                self.toward_zero[i].eq(config.rounding[1] & ~config.rounding[0]),
                out.base_line.eq(region_base[i]),
                out.n_superblocks.eq(region_superblocks[i]),
                out.end_line.eq(Mux(saturate, 1 << line_bits, end_low)),
            ]

        # --- write channel: AW and W held independently, the write acts when both are present -------------
        aw_held = Signal()
        aw_addr = Signal(addr_bits)
        w_held = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        b_pending = Signal()

        # every ready is a flip-flop of its own (the inverse of its held flag), so no port is driven by logic
        aw_ready = Signal(init=1)
        w_ready = Signal(init=1)
        m.d.comb += [
            bus.awready.eq(aw_ready),
            bus.wready.eq(w_ready),
            bus.bvalid.eq(b_pending),
            bus.bresp.eq(AXI_RESP_OKAY),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_ready.eq(0), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_ready.eq(0), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += b_pending.eq(0)

        # The B response goes out two cycles after the write acts, when every register it changed and every
        # value derived from them (region end_line) has settled: a request the host sends once it sees B is
        # decoded with the new region table. A write that acts on the poison list waits until the list shows it
        # to every reader, the CSR read port included (which shows the registered list, hdl/engine/poison.py):
        # a POISON_COMMAND inject or clear five cycles (the command pulse, the write path's command cycle, its
        # insert/clear register, the list's pending insert, the landing), a CONTROL.clear_poison three (its
        # pulse two cycles after the write, then the cleared masks). A CSR read or a MemRd the host sends in the
        # cycle it sees B then sees the list with the command applied (DEVICE.md §6).
        do_write = Signal()
        write_settling = Signal()      # == (settle_count != 0), a flip-flop of its own
        settle_count = Signal(range(8))
        acts_on_poison_command = Signal()
        acts_on_clear_poison = Signal()
        m.d.comb += do_write.eq(aw_held & w_held & ~b_pending & ~write_settling)
        with m.If(do_write):
            m.d.sync += [write_settling.eq(1),
                         settle_count.eq(Mux(acts_on_poison_command, 4, Mux(acts_on_clear_poison, 2, 1)))]
        with m.Elif(write_settling):
            m.d.sync += settle_count.eq(settle_count - 1)
            with m.If(settle_count == 1):
                m.d.sync += [write_settling.eq(0), b_pending.eq(1)]
        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), aw_ready.eq(1), w_ready.eq(1)]

        byte_mask = Signal(32)
        m.d.comb += byte_mask.eq(Cat(*(w_strb[i].replicate(8) for i in range(4))))

        def merged(old):
            """Register value after a strobed write."""
            width = len(old)
            return ((old & ~byte_mask[:width]) | (w_data & byte_mask)[:width])

        write_word = aw_addr[2:]
        clear_counters = Signal()
        clear_poison = Signal()
        regions_written = Signal()
        # pulsed two cycles after the write acts, with the registered region entries (see above)
        clear_poison_delayed = Signal()
        regions_written_delayed = Signal()
        m.d.sync += [
            clear_poison_delayed.eq(clear_poison),
            regions_written_delayed.eq(regions_written),
            self.clear_poison.eq(clear_poison_delayed),
            self.regions_written.eq(regions_written_delayed),
        ]
        m.d.comb += acts_on_clear_poison.eq((write_word == CSR_CONTROL >> 2) & w_strb[0]
                                            & w_data[CONTROL_CLEAR_POISON.bit_length() - 1])
        m.d.comb += clear_poison.eq(do_write & acts_on_clear_poison)
        command = w_data[:8]
        m.d.comb += acts_on_poison_command.eq((write_word == CSR_POISON_COMMAND >> 2) & w_strb[0]
                                              & ((command == POISON_COMMAND_INJECT) | (command == POISON_COMMAND_CLEAR)))
        m.d.sync += [
            self.poison_command.valid.eq(do_write & acts_on_poison_command),
            self.poison_command.clear.eq(command == POISON_COMMAND_CLEAR),
            self.poison_command.line.eq(poison_line),
        ]
        m.d.comb += clear_counters.eq(do_write & (write_word == CSR_CONTROL >> 2) & w_strb[0]
                                      & w_data[CONTROL_CLEAR_COUNTERS.bit_length() - 1])

        with m.If(do_write):
            with m.Switch(write_word):
                with m.Case(CSR_CONTROL >> 2):
                    with m.If(w_strb[0]):
                        m.d.sync += [
                            nxm_as_poison.eq(w_data[CONTROL_NXM_AS_POISON.bit_length() - 1]),
                            mem_data_nxm.eq(w_data[CONTROL_MEM_DATA_NXM.bit_length() - 1]),
                            hole_poison.eq(w_data[CONTROL_HOLE_POISON.bit_length() - 1]),
                        ]
                with m.Case(CSR_POISON_LINE >> 2):
                    m.d.sync += poison_line.eq(merged(poison_line))
                with m.Case(CSR_POISON_LIST_INDEX >> 2):
                    m.d.sync += poison_list_index.eq(merged(poison_list_index))
                for i in range(p.n_regions):
                    base_addr = CSR_REGION_BASE + CSR_REGION_STRIDE * i
                    with m.Case(base_addr >> 2):
                        m.d.sync += region_base[i].eq(merged(region_base[i]))
                        m.d.comb += regions_written.eq(1)
                    with m.Case((base_addr + 4) >> 2):
                        m.d.sync += region_superblocks[i].eq(merged(region_superblocks[i]))
                        m.d.comb += regions_written.eq(1)
                    with m.Case((base_addr + 8) >> 2):
                        new_config = Signal(region_config_layout, name=f"region{i}_new_config")
                        m.d.comb += new_config.eq(merged(region_config[i].as_value()))
                        legal = ~((new_config.format & (new_config.log2_b_minus_1 != 3))
                                  | (new_config.log2_b_minus_1 >= p.log2_b_max)
                                  | (new_config.rounding > Rounding.TOWARD_ZERO)
                                  | (new_config.log2_r > MAX_LOG2_R))
                        m.d.sync += [region_config[i].eq(new_config), region_config[i].enable.eq(new_config.enable & legal),
                                     region_shift[i].eq(new_config.log2_r + new_config.log2_b_minus_1 + 1)]
                        m.d.comb += regions_written.eq(1)

        # --- counter bank -------------------------------------------------------------------------------------
        # The increments are registered first: the event logic of the units (decode, region match, poison
        # lookup) then ends at a flip-flop instead of running on into 32-bit adders, which was the critical path
        # of the FPGA build. Counters lag their events by one cycle; a clear drops the increments it meets.
        # The increment register takes the events as they are (no clear gating on the events' path: that was a
        # LUT level, or the flip-flops' LSR, behind the deepest event logic); the clear's drop of its own
        # cycle's increments is applied one cycle later, at the adder's input, from a registered copy of the
        # clear (the same counts as gating the register).
        counter_inc = Signal(data.ArrayLayout(unsigned(8), N_COUNTERS))
        clear_counters_delayed = Signal()
        m.d.sync += [counter_inc.eq(self.counter_inc), clear_counters_delayed.eq(clear_counters)]
        for n, counter in counters.items():
            with m.If(clear_counters):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + Mux(clear_counters_delayed, 0, counter_inc[n]))

        # --- read channel -------------------------------------------------------------------------------------
        # Two stages. The AR handshake registers, for each group of the map (the fixed registers 0x000..0x03C,
        # the poison list's record 0x020 / 0x024, the region table 0x100..0x1FC, the counters 0x400..0x4FC),
        # the word the address names within the group (a mux tree on the in-group address bits, holes 0) and
        # whether the address falls in the group; the next edge loads R from the groups hit. The values are
        # sampled at the AR handshake, as before; only R comes a cycle later. (One mux over the whole map was
        # 11 LUT levels in the FPGA build's logic-depth report, fpga/README.md round 17.)
        r_pending = Signal()
        r_data = Signal(32)
        ar_ready = Signal(init=1)   # == ~(read_step | r_pending), as a flip-flop of its own
        read_step = Signal()        # AR accepted at the last edge: R's data loads at the next
        m.d.comb += [
            bus.arready.eq(ar_ready),
            bus.rvalid.eq(r_pending),
            bus.rdata.eq(r_data),
            bus.rresp.eq(AXI_RESP_OKAY),
        ]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += [r_pending.eq(0), ar_ready.eq(1)]

        zero = Const(0, 32)
        fixed_words = [zero] * 16
        fixed_words[CSR_ID >> 2] = Const(ID_VALUE, 32)
        fixed_words[CSR_VERSION >> 2] = Const(VERSION_VALUE, 32)
        fixed_words[CSR_PARAMS >> 2] = Const(params_word(p), 32)
        fixed_words[CSR_CONTROL >> 2] = Cat(nxm_as_poison, Const(0, 2), mem_data_nxm, hole_poison)
        fixed_words[CSR_STATUS >> 2] = Cat(self.poison_overflow, self.busy)
        fixed_words[CSR_POISON_LINE >> 2] = poison_line
        fixed_words[CSR_POISON_LIST_INDEX >> 2] = poison_list_index
        fixed_words[CSR_POISON_COUNT >> 2] = self.poison_count
        region_words = [zero] * (16 * 4)      # word 4 * i + field of region i (field 3 and i >= n_regions: 0)
        for i in range(p.n_regions):
            region_words[4 * i: 4 * i + 3] = [region_base[i], region_superblocks[i], region_config[i].as_value()]
        counter_words = [counters.get(n, zero) for n in range(64)]
        assert CSR_REGION_STRIDE == 0x10 and CSR_REGION_BASE % 0x100 == 0 and CSR_COUNTER_BASE % 0x100 == 0
        assert N_COUNTERS <= 64 and len(fixed_words) == 16
        word = bus.araddr[2:]
        page = bus.araddr[8:]             # 256-byte page: 0 fixed (below 0x40), CSR_REGION_BASE, CSR_COUNTER_BASE
        # the poison list's record (chosen by POISON_LIST_INDEX in the list, several levels deep) has a group of
        # its own, so it passes one mux here, not the fixed group's tree
        record_hit = (word == CSR_POISON_LIST_LINE >> 2) | (word == CSR_POISON_LIST_ENTRY >> 2)
        record_word = Mux(~self.poison_record_valid, 0,
                          Mux(word == CSR_POISON_LIST_LINE >> 2, self.poison_record.first,
                              Cat(self.poison_record.mask, self.poison_record.log2_stride, Const(0, 12), Const(1, 1))))
        groups = [  # (hit, word within the group)
            (record_hit, record_word),
            ((page == 0) & (bus.araddr[6:8] == 0), mux_tree(fixed_words, word[:4])),
            (page == CSR_REGION_BASE >> 8, mux_tree(region_words, word[:6])),
            (page == CSR_COUNTER_BASE >> 8, mux_tree(counter_words, word[:6])),
        ]
        group_hit = Signal(len(groups))
        group_word = Signal(data.ArrayLayout(32, len(groups)))
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [ar_ready.eq(0), read_step.eq(1), group_hit.eq(Cat(hit for hit, _ in groups))]
            m.d.sync += [group_word[g].eq(value) for g, (_, value) in enumerate(groups)]
        with m.If(read_step):
            m.d.sync += [read_step.eq(0), r_pending.eq(1),
                         r_data.eq(or_all([Mux(group_hit[g], group_word[g], 0) for g in range(len(groups))]))]

        return m
