//! Oracles for the layout rules the kernels and their CPU emulation share. The emulation runs the
//! kernels' own code, so a rule both sides get wrong the same way (a 128-byte swizzle that stays
//! inside address bits 4-9, a misread register fragment) passes every emulated GEMM test. Here
//! each rule is written again from the PTX ISA's description of it, in Rust and without calling
//! kiln's C++, and compared with what probe kernels (kernels/layout_probe.cu,
//! kernels/layout_probe_wgmma.cu) produce: under emulation always, and on CUDA device 0 where one
//! is usable, where the instructions themselves (mma.sync, wgmma) answer.
//!
//! Sections of the PTX ISA the expected values come from:
//! - "Tensor Swizzling Modes" (128B) and the wgmma "Shared Memory Matrix Layout" (swizzling);
//! - "Matrix Descriptor Format" (the wgmma shared-memory matrix descriptor);
//! - "Matrix Fragments for mma.m16n8k16 with floating point type";
//! - "Register Fragments and Shared Memory Matrix Layouts" (wgmma .m64nNk16, the D fragment, and
//!   the canonical K-major and MN-major layouts with the 128-byte swizzle).

use half::{bf16, f16};
use kiln::cuda::layout_probe::{
    self, Half, WgmmaProbe, WGMMA_PROBE_ACCUMULATORS, WGMMA_PROBE_A_BYTES, WGMMA_PROBE_B_BYTES,
    WGMMA_PROBE_THREADS,
};
use kiln::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fails with the first mismatches (up to 8) and their count.
#[track_caller]
fn assert_all_equal<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: &[T],
    expected: &[T],
    label: impl Fn(usize) -> String,
) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    let wrong: Vec<String> = got
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (g, e))| g != e)
        .map(|(i, (g, e))| format!("  {}: got {g:?}, the PTX ISA says {e:?}", label(i)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} differ; first:\n{}",
        wrong.len(),
        got.len(),
        wrong[..wrong.len().min(8)].join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The 128-byte swizzle.

/// PTX ISA, "Tensor Swizzling Modes", 128B: shared memory is seen as rows of 128 bytes, 8 rows
/// (1024 bytes) to a repeating pattern; the 16-byte chunk c of row r is stored at chunk
/// c ^ (r mod 8) of the same row, the bytes inside a chunk in order.
fn isa_swizzle_128b(offset: u32) -> u32 {
    let row = offset / 128;
    let chunk = (offset % 128) / 16;
    let byte = offset % 16;
    row * 128 + (chunk ^ (row % 8)) * 16 + byte
}

fn swizzle_128b_moves_chunk_c_of_row_r_to_chunk_c_xor_r(device: Device) {
    // Every offset of three atoms (the first two and one far up, as a stage of the GEMM's ring
    // may be), and random ones anywhere in the 32-bit range the function takes.
    let mut offsets: Vec<u32> = (0..2048).chain(0x3_4c00..0x3_5000).collect();
    let mut rng = StdRng::seed_from_u64(0x5e1e);
    offsets.extend((0..4096).map(|_| rng.random::<u32>()));
    let expected: Vec<u32> = offsets.iter().map(|&o| isa_swizzle_128b(o)).collect();
    // The rule itself: a permutation of each atom.
    for atom in expected[..2048].chunks(1024) {
        let mut sorted = atom.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (atom[0]..atom[0] + 1024).collect::<Vec<u32>>());
    }
    let got = layout_probe::swizzle_128b(device, &offsets).unwrap();
    assert_all_equal(&format!("swizzle_128b on {device}"), &got, &expected, |i| {
        format!("offset {:#x}", offsets[i])
    });
}
kiln::test_device!(swizzle_128b_moves_chunk_c_of_row_r_to_chunk_c_xor_r, gpu);

// ---------------------------------------------------------------------------------------------
// The wgmma matrix descriptor.

/// PTX ISA, "Matrix Descriptor Format": matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4; bits
/// 0-13 hold the encoded start address, 16-29 the encoded leading-dimension byte offset, 32-45
/// the encoded stride-dimension byte offset, 49-51 the matrix base offset, 62-63 the swizzle mode
/// (1: 128-byte swizzle); the other bits are 0. The base offset is 0 for a start address on the
/// swizzle pattern's row 0 ((start >> 7) & 7 = 0), which is where every tile kiln describes
/// starts (1024-byte aligned stages, k slices less than a row in or whole groups of 8 rows in).
fn isa_descriptor(start: u32, leading: u32, stride: u32) -> u64 {
    let encode = |x: u32| u64::from((x & 0x3_ffff) >> 4);
    let base_offset = u64::from((start >> 7) & 7);
    encode(start) | encode(leading) << 16 | encode(stride) << 32 | base_offset << 49 | 1 << 62
}

fn wgmma_descriptors_have_the_ptx_isa_bit_fields(device: Device) {
    // The descriptors gemm_wgmma.cu builds (K-major: stride 1024, leading 16, k slices 32 bytes
    // apart; MN-major: leading 8192 between atoms, slices 2048 bytes apart), then random fields:
    // starts anywhere on row 0 of a pattern (bits 7-9 clear), with junk in bits 0-3 and above
    // bit 17 that the encoding drops, and any offsets at all.
    let mut fields: Vec<[u32; 3]> = Vec::new();
    for stage in [0u32, 0x400, 0x8400, 0x3_1c00] {
        for step in 0..4 {
            fields.push([stage + 32 * step, 16, 1024]);
            fields.push([stage + 8192 + 2048 * step, 8192, 1024]);
        }
    }
    let mut rng = StdRng::seed_from_u64(0xde5c);
    fields.extend((0..2000).map(|_| {
        let start = rng.random::<u32>() & !(7 << 7);
        [start, rng.random(), rng.random()]
    }));
    let expected: Vec<u64> = fields
        .iter()
        .map(|&[s, l, t]| isa_descriptor(s, l, t))
        .collect();
    let hex = |v: &[u64]| -> Vec<String> { v.iter().map(|d| format!("{d:#018x}")).collect() };
    let got = layout_probe::wgmma_descriptors(device, &fields).unwrap();
    assert_all_equal(
        &format!("wgmma_descriptor on {device}"),
        &hex(&got),
        &hex(&expected),
        |i| format!("wgmma_descriptor{:x?}", fields[i]),
    );
}
kiln::test_device!(wgmma_descriptors_have_the_ptx_isa_bit_fields, gpu);

// ---------------------------------------------------------------------------------------------
// mma.sync.m16n8k16 fragments.

/// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type": groupID = laneid >> 2,
/// threadID_in_group = laneid % 4. Element a_i (i = 0..7) of A (16 x 16, row-major) is at
/// row groupID for i < 2 or 4 <= i < 6, groupID + 8 otherwise; col threadID_in_group·2 + (i & 1),
/// + 8 for i >= 4.
fn a_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, t) = (lane >> 2, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) {
        group
    } else {
        group + 8
    };
    let col = t * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// The same section: element b_i (i = 0..3) of B (16 x 8) is at row threadID_in_group·2 + (i & 1),
/// + 8 for i >= 2; col groupID.
fn b_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, t) = (lane >> 2, lane % 4);
    (t * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, group)
}

/// The same section: element c_i (i = 0..3) of C and D (16 x 8) is at row groupID for i < 2,
/// groupID + 8 otherwise; col threadID_in_group·2 + (i & 1).
fn cd_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, t) = (lane >> 2, lane % 4);
    (if i < 2 { group } else { group + 8 }, t * 2 + (i & 1))
}

/// A value of the 16-bit format as its bits (the test's values are exact in both).
fn bits(format: Half, v: f32) -> u16 {
    match format {
        Half::Bf16 => bf16::from_f32(v).to_bits(),
        Half::F16 => f16::from_f32(v).to_bits(),
    }
}

/// Two 16-bit elements in one .b32 register: the lower-numbered element in the lower half
/// (PTX ISA, the .f16x2 / .bf16x2 packing the fragments use).
fn pack(format: Half, low: f32, high: f32) -> u32 {
    u32::from(bits(format, low)) | u32::from(bits(format, high)) << 16
}

/// Runs the mma probe on A (16 x 16), B (16 x 8) and C (16 x 8) laid out in registers as the
/// ISA says, and checks D = C + A·B, read back the same way (exact: the values are small
/// integers).
#[track_caller]
fn check_mma(
    device: Device,
    format: Half,
    a: &[[f32; 16]; 16],
    b: &[[f32; 8]; 16],
    c: &[[f32; 8]; 16],
) {
    let mut ra = [[0u32; 4]; 32];
    let mut rb = [[0u32; 2]; 32];
    let mut rc = [[0f32; 4]; 32];
    for lane in 0..32 {
        for (r, reg) in ra[lane].iter_mut().enumerate() {
            let ((r0, c0), (r1, c1)) = (a_element(lane, 2 * r), a_element(lane, 2 * r + 1));
            *reg = pack(format, a[r0][c0], a[r1][c1]);
        }
        for (r, reg) in rb[lane].iter_mut().enumerate() {
            let ((r0, c0), (r1, c1)) = (b_element(lane, 2 * r), b_element(lane, 2 * r + 1));
            *reg = pack(format, b[r0][c0], b[r1][c1]);
        }
        for (i, v) in rc[lane].iter_mut().enumerate() {
            let (row, col) = cd_element(lane, i);
            *v = c[row][col];
        }
    }
    let d = layout_probe::mma_m16n8k16(device, format, &ra, &rb, &rc).unwrap();
    let mut got = Vec::new();
    let mut expected = Vec::new();
    for (lane, regs) in d.iter().enumerate() {
        for (i, &v) in regs.iter().enumerate() {
            let (row, col) = cd_element(lane, i);
            got.push(v);
            expected.push(c[row][col] + (0..16).map(|k| a[row][k] * b[k][col]).sum::<f32>());
        }
    }
    assert_all_equal(
        &format!("mma.m16n8k16 {format:?} on {device}"),
        &got,
        &expected,
        |i| {
            let (row, col) = cd_element(i / 4, i % 4);
            format!("lane {} d{} (D[{row}][{col}])", i / 4, i % 4)
        },
    );
}

fn random_int<const R: usize, const C: usize>(rng: &mut StdRng, bound: i32) -> [[f32; C]; R] {
    let mut m = [[0f32; C]; R];
    for v in m.iter_mut().flatten() {
        *v = rng.random_range(-bound..=bound) as f32;
    }
    m
}

fn mma_m16n8k16_fragments_follow_the_ptx_isa(device: Device) {
    let mut rng = StdRng::seed_from_u64(0x16816);
    for format in [Half::Bf16, Half::F16] {
        // Coded A (A[r][k] = 16r + k, exact in both formats) times a selection B (column n
        // picks k = (5n + 3) mod 16): D[r][n] names the A element that reached it.
        let mut a = [[0f32; 16]; 16];
        let mut b = [[0f32; 8]; 16];
        for (r, row) in a.iter_mut().enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = (16 * r + k) as f32;
            }
        }
        for n in 0..8 {
            b[(5 * n + 3) % 16][n] = 1.0;
        }
        check_mma(device, format, &a, &b, &[[0.0; 8]; 16]);
        // A selection A (row r picks k = (3r + 1) mod 16) times coded B (B[k][n] = 8k + n
        // + 1), with a coded C added: D names the B and C elements that reached it.
        let mut a = [[0f32; 16]; 16];
        for (r, row) in a.iter_mut().enumerate() {
            row[(3 * r + 1) % 16] = 1.0;
        }
        let mut b = [[0f32; 8]; 16];
        let mut c = [[0f32; 8]; 16];
        for k in 0..16 {
            for n in 0..8 {
                b[k][n] = (8 * k + n + 1) as f32;
                c[k][n] = -1000.0 * (8 * k + n) as f32;
            }
        }
        check_mma(device, format, &a, &b, &c);
        // Random small integers everywhere (sums exact in f32).
        let (a, b, c) = (
            random_int::<16, 16>(&mut rng, 4),
            random_int::<16, 8>(&mut rng, 4),
            random_int::<16, 8>(&mut rng, 64),
        );
        check_mma(device, format, &a, &b, &c);
    }
}
kiln::test_device!(mma_m16n8k16_fragments_follow_the_ptx_isa, gpu);

// ---------------------------------------------------------------------------------------------
// wgmma.m64n128k16: shared-memory layouts, descriptors and D fragments together.

/// PTX ISA, "Register Fragments and Shared Memory Matrix Layouts", the canonical layouts with the
/// 128-byte swizzle, in 16-bit elements (T = 8 to 16 bytes): K-major, element (i, k) of a tile of
/// rows i and k contiguous sits at byte (i mod 8)·128 + (i / 8)·SBO + 2k; MN-major, element
/// (i, k) with i contiguous at (i mod 64)·2 + (i / 64)·LBO + (k mod 8)·128 + (k / 8)·SBO. The
/// offsets here are the ones gemm_wgmma.cu's descriptors give: SBO = 1024, LBO = 8192 (one 64 x
/// 64 atom). Then the swizzle, over the tile's 1024-byte aligned address.
fn tile_offset(mn_major: bool, i: usize, k: usize) -> u32 {
    let unswizzled = if mn_major {
        (i % 64) * 2 + (i / 64) * 8192 + (k % 8) * 128 + (k / 8) * 1024
    } else {
        (i % 8) * 128 + (i / 8) * 1024 + 2 * k
    };
    isa_swizzle_128b(unswizzled as u32)
}

/// The wgmma D fragment, same section, .m64nNk16: thread t of the warpgroup (warp w = t / 32,
/// lane l, groupID = l >> 2, threadID_in_group = l % 4) holds d_i, i = 0..N/2 − 1, at row
/// 16w + groupID (+ 8 when i mod 4 >= 2), col (i / 4)·8 + threadID_in_group·2 + (i & 1): the
/// m16n8 C layout of warp w's 16 rows, repeated every 8 columns.
fn wgmma_d_element(t: usize, i: usize) -> (usize, usize) {
    let (w, lane) = (t / 32, t % 32);
    let row = 16 * w + (lane >> 2) + if i % 4 >= 2 { 8 } else { 0 };
    let col = (i / 4) * 8 + (lane % 4) * 2 + (i & 1);
    (row, col)
}

fn wgmma_m64n128k16_reads_the_isa_layouts_and_writes_the_isa_fragments(device: Device) {
    let mut rng = StdRng::seed_from_u64(0x64128);
    // A: 64 (m) x 64 (k); B: 128 (n) x 64 (k), as op(B)ᵀ; small integers, products exact.
    let a: Vec<[f32; 64]> = (0..64).map(|_| random_row(&mut rng)).collect();
    let b: Vec<[f32; 64]> = (0..128).map(|_| random_row(&mut rng)).collect();
    for format in [Half::Bf16, Half::F16] {
        for (a_mn_major, b_mn_major) in [(false, false), (false, true), (true, false), (true, true)]
        {
            let mut image = vec![0u8; WGMMA_PROBE_A_BYTES + WGMMA_PROBE_B_BYTES];
            let mut put = |base: usize, mn_major: bool, i: usize, k: usize, v: f32| {
                let at = base + tile_offset(mn_major, i, k) as usize;
                image[at..at + 2].copy_from_slice(&bits(format, v).to_le_bytes());
            };
            for (i, row) in a.iter().enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    put(0, a_mn_major, i, k, v);
                }
            }
            for (i, row) in b.iter().enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    put(WGMMA_PROBE_A_BYTES, b_mn_major, i, k, v);
                }
            }
            for step in 0..4 {
                let probe = WgmmaProbe {
                    format,
                    a_mn_major,
                    b_mn_major,
                    step,
                };
                let Some(d) = layout_probe::wgmma_m64n128k16(device, probe, &image).unwrap() else {
                    eprintln!(
                        "wgmma oracle: skipped on {device}: not a compute capability 9.0 GPU"
                    );
                    return;
                };
                let ks = 16 * step as usize..16 * step as usize + 16;
                let expected: Vec<f32> = (0..WGMMA_PROBE_THREADS * WGMMA_PROBE_ACCUMULATORS)
                    .map(|e| {
                        let (row, col) = wgmma_d_element(
                            e / WGMMA_PROBE_ACCUMULATORS,
                            e % WGMMA_PROBE_ACCUMULATORS,
                        );
                        ks.clone().map(|k| a[row][k] * b[col][k]).sum()
                    })
                    .collect();
                assert_all_equal(
                    &format!("wgmma {probe:?} on {device}"),
                    &d,
                    &expected,
                    |e| {
                        let (t, i) = (e / WGMMA_PROBE_ACCUMULATORS, e % WGMMA_PROBE_ACCUMULATORS);
                        let (row, col) = wgmma_d_element(t, i);
                        format!("thread {t} d{i} (D[{row}][{col}])")
                    },
                );
            }
        }
    }
}
kiln::test_device!(
    wgmma_m64n128k16_reads_the_isa_layouts_and_writes_the_isa_fragments,
    gpu
);

fn random_row(rng: &mut StdRng) -> [f32; 64] {
    let mut row = [0f32; 64];
    for v in &mut row {
        *v = rng.random_range(-4..=4) as f32;
    }
    row
}
