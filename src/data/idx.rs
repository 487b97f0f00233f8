//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! Layout (all integers big-endian): a magic number `0x0000TTDD` where `TT` is the element type
//! (`0x08` = unsigned byte, the only type read here) and `DD` the number of dimensions, then one
//! u32 per dimension, then the elements in row-major order. Images are `0x00000803`
//! (`[count, rows, cols]`), labels `0x00000801` (`[count]`); images with channels, which kiln
//! reads and writes with [`read_idx_samples`] and [`write_idx_samples`], are `0x00000804`
//! (`[count, rows, cols, channels]`, channels last as numpy and PIL hold images, 1 or 3).
//!
//! A file whose first two bytes are the gzip magic `1f 8b` is decompressed on the fly, whatever
//! its name. The reader checks the magic number, the dimensions, and that the content is exactly
//! as long as the header says: a truncated or over-long file is an error naming the file and the
//! expected and actual byte counts, never a panic or a silent short read.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::error::{invalid, io_error, DataError};

/// Magic number of an IDX file of unsigned-byte images `[count, rows, cols]`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels `[count]`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Magic number of an IDX file of unsigned-byte images with channels,
/// `[count, rows, cols, channels]` (channels last, as numpy and PIL hold images).
pub const IDX_IMAGES4_MAGIC: u32 = 0x0000_0804;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The IDX element type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// Greyscale images read from an IDX file: `count` images of `rows × cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (`0x00000803`, u8, 3-d), raw or gzip-compressed.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_idx_u8(path, IDX_IMAGES_MAGIC, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::BadDims {
            path: path.to_path_buf(),
            dims,
            why: "images must have at least one row and one column".into(),
        });
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Images of any size with 1 or 3 channels, as [`read_idx_samples`] returns them: `count` samples
/// of `shape = [C, H, W]`, pixels `[count, C, H, W]` row-major (channels first, as kiln trains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxSamples {
    pub count: usize,
    pub shape: [usize; 3],
    pub pixels: Vec<u8>,
}

/// Reads the images of an IDX file of any size: `[count, rows, cols]` (magic `0x00000803`,
/// greyscale, as MNIST, KMNIST, EMNIST and Fashion-MNIST) or `[count, rows, cols, channels]`
/// (magic `0x00000804`, channels last, with 1 or 3 channels), raw or gzip-compressed. The pixels
/// come back channels first (`[count, C, H, W]`).
pub fn read_idx_samples(path: &Path) -> Result<IdxSamples, DataError> {
    let (dims, pixels) =
        read_idx_u8_of_ranks(path, &[IDX_IMAGES_MAGIC, IDX_IMAGES4_MAGIC], "images")?;
    let bad_dims = |why: String| DataError::BadDims {
        path: path.to_path_buf(),
        dims: dims.clone(),
        why,
    };
    let (count, h, w, c) = match dims[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        _ => return Err(bad_dims("images are 3- or 4-dimensional".into())),
    };
    if h == 0 || w == 0 {
        return Err(bad_dims(
            "images must have at least one row and one column".into(),
        ));
    }
    if c != 1 && c != 3 {
        return Err(bad_dims(format!(
            "a 4-dimensional IDX image file is [count, rows, cols, channels] (channels last) \
             with 1 or 3 channels; found {c} channels"
        )));
    }
    let pixels = if c == 1 {
        pixels
    } else {
        // [n, h, w, c] -> [n, c, h, w].
        let plane = h * w;
        let mut out = vec![0u8; pixels.len()];
        for (src, dst) in pixels
            .chunks_exact(plane * c)
            .zip(out.chunks_exact_mut(plane * c))
        {
            for (p, px) in src.chunks_exact(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    dst[ch * plane + p] = v;
                }
            }
        }
        out
    };
    Ok(IdxSamples {
        count,
        shape: [c, h, w],
        pixels,
    })
}

/// Writes `samples` as [`read_idx_samples`] reads them: a 3-dimensional file for one channel, a
/// 4-dimensional channels-last file otherwise; gzip-compressed when `gzip` is true.
pub fn write_idx_samples(path: &Path, samples: &IdxSamples, gzip: bool) -> Result<(), DataError> {
    let [c, h, w] = samples.shape;
    let plane = h * w;
    let expected = samples
        .count
        .checked_mul(c)
        .and_then(|n| n.checked_mul(plane));
    if expected != Some(samples.pixels.len()) || plane == 0 {
        return Err(invalid(
            "IDX samples",
            format!(
                "{} pixels do not fill {} samples of {:?}",
                samples.pixels.len(),
                samples.count,
                samples.shape
            ),
        ));
    }
    if c == 1 {
        return write_idx_u8(
            path,
            IDX_IMAGES_MAGIC,
            &[samples.count, h, w],
            &samples.pixels,
            gzip,
        );
    }
    let mut hwc = vec![0u8; samples.pixels.len()];
    for (src, dst) in samples
        .pixels
        .chunks_exact(plane * c)
        .zip(hwc.chunks_exact_mut(plane * c))
    {
        for ch in 0..c {
            for p in 0..plane {
                dst[p * c + ch] = src[ch * plane + p];
            }
        }
    }
    write_idx_u8(
        path,
        IDX_IMAGES4_MAGIC,
        &[samples.count, h, w, c],
        &hwc,
        gzip,
    )
}

/// Reads an IDX label file (`0x00000801`, u8, 1-d), raw or gzip-compressed.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_idx_u8(path, IDX_LABELS_MAGIC, "labels")?.1)
}

/// Writes `images` as an IDX image file, gzip-compressed when `gzip` is true.
pub fn write_idx_images(path: &Path, images: &IdxImages, gzip: bool) -> Result<(), DataError> {
    let expected = images
        .count
        .checked_mul(images.rows)
        .and_then(|n| n.checked_mul(images.cols));
    if expected != Some(images.pixels.len()) {
        return Err(invalid(
            "IDX images",
            format!(
                "{} pixels do not fill {}×{}×{}",
                images.pixels.len(),
                images.count,
                images.rows,
                images.cols
            ),
        ));
    }
    write_idx_u8(
        path,
        IDX_IMAGES_MAGIC,
        &[images.count, images.rows, images.cols],
        &images.pixels,
        gzip,
    )
}

/// Writes `labels` as an IDX label file, gzip-compressed when `gzip` is true.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<(), DataError> {
    write_idx_u8(path, IDX_LABELS_MAGIC, &[labels.len()], labels, gzip)
}

fn write_idx_u8(
    path: &Path,
    magic: u32,
    dims: &[usize],
    data: &[u8],
    gzip: bool,
) -> Result<(), DataError> {
    let mut header = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| invalid("IDX dimensions", format!("{d} does not fit in a u32")))?;
        header.extend_from_slice(&d.to_be_bytes());
    }
    let file = File::create(path).map_err(io_error(path))?;
    let write = |w: &mut dyn Write| -> io::Result<()> {
        w.write_all(&header)?;
        w.write_all(data)?;
        w.flush()
    };
    if gzip {
        let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::fast());
        write(&mut encoder).map_err(io_error(path))?;
        encoder
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(io_error(path))
    } else {
        write(&mut BufWriter::new(file)).map_err(io_error(path))
    }
}

/// Opens `path`, looks at its first two bytes, and returns a reader of the IDX content
/// (decompressing when they are the gzip magic) and whether it was compressed.
fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn Read>, bool), DataError> {
    let mut file = BufReader::new(File::open(path).map_err(io_error(path))?);
    let mut head = [0u8; 2];
    let n = read_full(&mut file, &mut head).map_err(io_error(path))?;
    let content = Cursor::new(head[..n].to_vec()).chain(file);
    if n == 2 && head == GZIP_MAGIC {
        Ok((Box::new(MultiGzDecoder::new(content)), true))
    } else {
        Ok((Box::new(content), false))
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "not an IDX type",
    }
}

/// Reads an IDX file of unsigned bytes with the given magic number; returns its dimensions and
/// its elements.
fn read_idx_u8(
    path: &Path,
    magic: u32,
    kind: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    read_idx_u8_of_ranks(path, &[magic], kind)
}

/// [`read_idx_u8`] for a file that may have any of the magic numbers `magics` (unsigned bytes of
/// one of several ranks); the first is named when the file has none of them.
fn read_idx_u8_of_ranks(
    path: &Path,
    magics: &[u32],
    kind: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let (mut r, gzip) = open_maybe_gzip(path)?;
    let magic = magics[0];
    let mut ndims = (magic & 0xff) as usize;
    let mut header_len = 4 + 4 * ndims as u64;
    let length_error = |expected: u64, actual: u64, layout: String| DataError::Length {
        path: path.to_path_buf(),
        expected,
        actual,
        layout,
        gzip,
    };

    // A read error inside a gzip stream means corrupt or truncated compressed data.
    let read_error = |source: io::Error| {
        if gzip {
            DataError::Gzip {
                path: path.to_path_buf(),
                source,
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };

    let mut head = [0u8; 4];
    let n = read_full(&mut r, &mut head).map_err(read_error)?;
    if n < 4 {
        return Err(length_error(
            header_len,
            n as u64,
            format!("the {header_len}-byte IDX header of {kind}"),
        ));
    }
    let found = u32::from_be_bytes(head);
    if magics.contains(&found) {
        ndims = (found & 0xff) as usize;
        header_len = 4 + 4 * ndims as u64;
    } else {
        let why = if head[0] != 0 || head[1] != 0 {
            format!("not an IDX file of {kind} (an IDX file starts with two zero bytes)")
        } else if head[2] != TYPE_U8 {
            format!(
                "IDX element type 0x{:02x} ({}) is not supported: {kind} must be unsigned bytes (0x08)",
                head[2],
                type_name(head[2])
            )
        } else {
            let ranks: Vec<String> = magics.iter().map(|m| (m & 0xff).to_string()).collect();
            format!(
                "{}-dimensional IDX data, but {kind} must be {}-dimensional",
                head[3],
                ranks.join(" or ")
            )
        };
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            why,
        });
    }

    let mut raw_dims = vec![0u8; 4 * ndims];
    let n = read_full(&mut r, &mut raw_dims).map_err(read_error)?;
    if n < raw_dims.len() {
        return Err(length_error(
            header_len,
            4 + n as u64,
            format!("the {header_len}-byte IDX header of {kind}"),
        ));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let payload = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| DataError::BadDims {
            path: path.to_path_buf(),
            dims: dims.clone(),
            why: "the element count overflows".into(),
        })?;
    let layout = format!(
        "{header_len}-byte header + {} bytes of {kind}",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    );

    // A raw file's length is known: check it before allocating what the header claims. A gzip
    // stream's is not: its buffer grows as bytes arrive, so a corrupt header cannot make us
    // allocate more than the stream holds. Then count whatever follows the expected content.
    if !gzip {
        let actual = std::fs::metadata(path).map_err(io_error(path))?.len();
        if actual != header_len + payload {
            return Err(length_error(header_len + payload, actual, layout));
        }
    }
    let mut data = Vec::with_capacity(if gzip { 0 } else { payload as usize });
    (&mut r)
        .take(payload)
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if (data.len() as u64) < payload {
        return Err(length_error(
            header_len + payload,
            header_len + data.len() as u64,
            layout,
        ));
    }
    let extra = io::copy(&mut r, &mut io::sink()).map_err(read_error)?;
    if extra > 0 {
        return Err(length_error(
            header_len + payload,
            header_len + payload + extra,
            layout,
        ));
    }
    Ok((dims, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_cover_the_idx_codes() {
        assert_eq!(type_name(0x08), "unsigned byte");
        assert_eq!(type_name(0x0D), "f32");
        assert_eq!(type_name(0x42), "not an IDX type");
    }

    #[test]
    fn read_full_stops_at_the_end() {
        let mut r = Cursor::new(vec![1u8, 2, 3]);
        let mut buf = [0u8; 5];
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[1, 2, 3]);
    }
}
