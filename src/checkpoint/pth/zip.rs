//! A minimal reader of the zip archives `torch.save` writes: the end-of-central-directory record
//! (and its zip64 form, which torch writes for files beyond 4 GiB), the central directory, and
//! each entry's data through its local header. Entries are stored (method 0, what torch writes)
//! or deflated (method 8, what `zip` writes when someone re-packs a file); any other method is
//! refused. Every offset and length is checked against the file before it is used, and nothing
//! is allocated from a size the file declares: a stored entry is a slice of the file, and an
//! inflated one grows only as its data really inflates, capped at the declared size.
//!
//! The format: <https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT> (sections 4.3.7
//! local header, 4.3.12 central directory header, 4.3.14–4.3.16 zip64 and end records, 4.5.3 the
//! zip64 extra field).

use std::borrow::Cow;
use std::io::Read;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIR: u32 = 0x0605_4b50;
const ZIP64_END_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_END_OF_CENTRAL_DIR: u32 = 0x0606_4b50;
/// The end record is 22 bytes plus a comment of at most 65,535.
const END_RECORD_LEN: usize = 22;
const MAX_COMMENT: usize = 0xffff;

/// Deflate cannot inflate beyond about 1032:1; a declared size beyond that is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// One file of the archive, as its central directory header describes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    method: u16,
    compressed_size: u64,
    size: u64,
    local_header_offset: u64,
}

/// The entries of a zip archive held in memory.
#[derive(Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    pub entries: Vec<Entry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A file offset or size as a `usize` that lies within `len`, or the error `what`.
fn within(v: u64, len: usize, what: &str) -> Result<usize, String> {
    usize::try_from(v).ok().filter(|&v| v <= len).ok_or_else(|| format!("zip: {what} ({v}) lies beyond the file ({len} bytes)"))
}

impl<'a> Archive<'a> {
    /// Reads the central directory of the zip archive `bytes`. Errors are plain messages; the
    /// caller adds the path.
    pub fn parse(bytes: &'a [u8]) -> Result<Archive<'a>, String> {
        let end = find_end_record(bytes).ok_or("zip: no end-of-central-directory record (truncated file?)")?;
        let mut count = u64::from(u16_at(bytes, end + 10).ok_or("zip: truncated end record")?);
        let mut dir_size = u64::from(u32_at(bytes, end + 12).ok_or("zip: truncated end record")?);
        let mut dir_offset = u64::from(u32_at(bytes, end + 16).ok_or("zip: truncated end record")?);
        if count == 0xffff || dir_size == 0xffff_ffff || dir_offset == 0xffff_ffff {
            // zip64: a locator sits right before the end record and points at the zip64 end record.
            let loc = end.checked_sub(20).ok_or("zip: zip64 fields without a zip64 end locator")?;
            if u32_at(bytes, loc) != Some(ZIP64_END_LOCATOR) {
                return Err("zip: zip64 fields without a zip64 end locator".into());
            }
            let rec = within(u64_at(bytes, loc + 8).ok_or("zip: truncated zip64 locator")?, bytes.len(), "zip64 end record offset")?;
            if u32_at(bytes, rec) != Some(ZIP64_END_OF_CENTRAL_DIR) {
                return Err("zip: the zip64 end locator does not point at a zip64 end record".into());
            }
            count = u64_at(bytes, rec + 32).ok_or("zip: truncated zip64 end record")?;
            dir_size = u64_at(bytes, rec + 40).ok_or("zip: truncated zip64 end record")?;
            dir_offset = u64_at(bytes, rec + 48).ok_or("zip: truncated zip64 end record")?;
        }
        let start = within(dir_offset, bytes.len(), "central directory offset")?;
        let stop = within(dir_offset.saturating_add(dir_size), bytes.len(), "central directory end")?;
        let dir = &bytes[start..stop];
        // Each central header is at least 46 bytes, so the count cannot exceed what fits.
        if count > (dir.len() / 46) as u64 {
            return Err(format!("zip: the end record claims {count} entries, more than its {}-byte directory holds", dir.len()));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = 0usize;
        for i in 0..count {
            let trunc = || format!("zip: central directory entry {i} is truncated");
            if u32_at(dir, at) != Some(CENTRAL_HEADER) {
                return Err(format!("zip: central directory entry {i} has no header signature"));
            }
            let method = u16_at(dir, at + 10).ok_or_else(trunc)?;
            let mut compressed_size = u64::from(u32_at(dir, at + 20).ok_or_else(trunc)?);
            let mut size = u64::from(u32_at(dir, at + 24).ok_or_else(trunc)?);
            let name_len = usize::from(u16_at(dir, at + 28).ok_or_else(trunc)?);
            let extra_len = usize::from(u16_at(dir, at + 30).ok_or_else(trunc)?);
            let comment_len = usize::from(u16_at(dir, at + 32).ok_or_else(trunc)?);
            let mut local_header_offset = u64::from(u32_at(dir, at + 42).ok_or_else(trunc)?);
            let name_at = at + 46;
            let name = dir.get(name_at..name_at + name_len).ok_or_else(trunc)?;
            let extra = dir.get(name_at + name_len..name_at + name_len + extra_len).ok_or_else(trunc)?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| format!("zip: entry {i}'s name is not UTF-8"))?;
            // The zip64 extra field holds, in this order, only the fields whose 32-bit value is all ones.
            let mut wanted = [&mut size, &mut compressed_size, &mut local_header_offset];
            if wanted.iter().any(|v| **v == 0xffff_ffff) {
                let z =
                    zip64_extra(extra).ok_or_else(|| format!("zip: entry {name} has 32-bit sizes at their maximum but no zip64 field"))?;
                let mut k = 0;
                for v in wanted.iter_mut() {
                    if **v == 0xffff_ffff {
                        **v = u64_at(z, k).ok_or_else(|| format!("zip: entry {name}'s zip64 field is too short"))?;
                        k += 8;
                    }
                }
            }
            entries.push(Entry { name, method, compressed_size, size, local_header_offset });
            at = name_at + name_len + extra_len + comment_len;
        }
        Ok(Archive { bytes, entries })
    }

    /// The entry called `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The data of `entry`: a slice of the file when stored, inflated when deflated.
    pub fn read(&self, entry: &Entry) -> Result<Cow<'a, [u8]>, String> {
        let b = self.bytes;
        let name = &entry.name;
        let at = within(entry.local_header_offset, b.len(), "local header offset")?;
        if u32_at(b, at) != Some(LOCAL_HEADER) {
            return Err(format!("zip: entry {name}'s local header is missing"));
        }
        // The local header's name and extra lengths may differ from the central directory's
        // (torch pads the local extra field to align the data), so its own are used.
        let name_len = usize::from(u16_at(b, at + 26).ok_or_else(|| format!("zip: entry {name}'s local header is truncated"))?);
        let extra_len = usize::from(u16_at(b, at + 28).ok_or_else(|| format!("zip: entry {name}'s local header is truncated"))?);
        let start = at + 30 + name_len + extra_len;
        let start = within(start as u64, b.len(), "entry data start")?;
        let stop = within((start as u64).saturating_add(entry.compressed_size), b.len(), &format!("the end of entry {name}"))?;
        let data = &b[start..stop];
        match entry.method {
            0 => {
                if entry.size != entry.compressed_size {
                    return Err(format!("zip: stored entry {name} has size {} but occupies {} bytes", entry.size, entry.compressed_size));
                }
                Ok(Cow::Borrowed(data))
            }
            8 => {
                if entry.size > entry.compressed_size.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(64) {
                    return Err(format!(
                        "zip: deflated entry {name} claims {} bytes from {}, more than deflate can inflate to",
                        entry.size, entry.compressed_size
                    ));
                }
                let mut out = Vec::new();
                let mut inflater = flate2::read::DeflateDecoder::new(data).take(entry.size.saturating_add(1));
                inflater.read_to_end(&mut out).map_err(|e| format!("zip: entry {name} does not inflate: {e}"))?;
                if out.len() as u64 != entry.size {
                    return Err(format!("zip: entry {name} inflates to {} bytes, not the {} its header says", out.len(), entry.size));
                }
                Ok(Cow::Owned(out))
            }
            m => Err(format!(
                "zip: entry {name} is compressed with method {m} ({}); headswap reads stored and deflated entries only \
                 (torch.save writes stored ones)",
                method_name(m)
            )),
        }
    }
}

fn method_name(m: u16) -> &'static str {
    match m {
        12 => "bzip2",
        14 => "LZMA",
        93 => "zstd",
        95 => "xz",
        99 => "AES encryption",
        _ => "unknown",
    }
}

/// The start of the end-of-central-directory record: the last signature within the final
/// 22 + 65,535 bytes whose comment length reaches exactly the end of the file.
fn find_end_record(b: &[u8]) -> Option<usize> {
    let last = b.len().checked_sub(END_RECORD_LEN)?;
    let first = last.saturating_sub(MAX_COMMENT);
    (first..=last)
        .rev()
        .find(|&i| u32_at(b, i) == Some(END_OF_CENTRAL_DIR) && u16_at(b, i + 20).map(usize::from) == Some(b.len() - i - END_RECORD_LEN))
}

/// The data of the zip64 extended-information extra field (header id 1), if there is one.
fn zip64_extra(extra: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16_at(extra, at)?;
        let len = usize::from(u16_at(extra, at + 2)?);
        let data = extra.get(at + 4..at + 4 + len)?;
        if id == 1 {
            return Some(data);
        }
        at += 4 + len;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zip archive of `entries` (name, data, method 0 or 8): stored entries with `pad` bytes of
    /// local extra field (as torch aligns its data), and with `zip64` every size and offset moved
    /// into zip64 extra fields and a zip64 end record.
    pub(crate) fn write_zip(entries: &[(&str, &[u8], u16)], pad: usize, zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for &(name, data, method) in entries {
            let body = if method == 8 {
                use std::io::Write;
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            } else {
                data.to_vec()
            };
            let offset = out.len() as u64;
            let max = 0xffff_ffffu32;
            let (csize32, size32, off32) = if zip64 { (max, max, max) } else { (body.len() as u32, data.len() as u32, offset as u32) };
            out.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 8]); // time, date, crc (unchecked)
            out.extend_from_slice(&csize32.to_le_bytes());
            out.extend_from_slice(&size32.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend(std::iter::repeat_n(0u8, pad));
            out.extend_from_slice(&body);

            let mut extra = Vec::new();
            if zip64 {
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                extra.extend_from_slice(&(data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&(body.len() as u64).to_le_bytes());
                extra.extend_from_slice(&offset.to_le_bytes());
            }
            central.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            central.extend_from_slice(&[45, 0, 45, 0, 0, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&csize32.to_le_bytes());
            central.extend_from_slice(&size32.to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
            central.extend_from_slice(&off32.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let dir_offset = out.len() as u64;
        out.extend_from_slice(&central);
        let n = entries.len() as u64;
        if zip64 {
            let rec = out.len() as u64;
            out.extend_from_slice(&ZIP64_END_OF_CENTRAL_DIR.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(central.len() as u64).to_le_bytes());
            out.extend_from_slice(&dir_offset.to_le_bytes());
            out.extend_from_slice(&ZIP64_END_LOCATOR.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&rec.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&END_OF_CENTRAL_DIR.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let (n16, size32, off32) =
            if zip64 { (0xffff, 0xffff_ffff, 0xffff_ffff) } else { (n as u16, central.len() as u32, dir_offset as u32) };
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&off32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn contents(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let a = Archive::parse(bytes).unwrap();
        a.entries.iter().map(|e| (e.name.clone(), a.read(e).unwrap().into_owned())).collect()
    }

    #[test]
    fn reads_stored_deflated_and_zip64_entries() {
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let entries: [(&str, &[u8], u16); 3] = [("a/data.pkl", b"\x80\x02.", 0), ("a/data/0", &big, 8), ("a/version", b"3\n", 0)];
        for (pad, zip64) in [(0, false), (37, false), (0, true), (5, true)] {
            let got = contents(&write_zip(&entries, pad, zip64));
            let want: Vec<(String, Vec<u8>)> = entries.iter().map(|(n, d, _)| (n.to_string(), d.to_vec())).collect();
            assert_eq!(got, want, "pad {pad}, zip64 {zip64}");
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = write_zip(&[("a/data.pkl", b"\x80\x02N.", 0), ("a/data/0", &[1, 2, 3, 4], 8)], 3, true);
        for n in 0..bytes.len() {
            let cut = &bytes[..n];
            if let Ok(a) = Archive::parse(cut) {
                // a cut that keeps a valid end record cannot keep every entry's data
                assert!(a.entries.iter().any(|e| a.read(e).is_err()), "cut at {n} reads everything");
            }
        }
    }

    #[test]
    fn refuses_lies_about_sizes_and_methods() {
        let mut bytes = write_zip(&[("x", &[0u8; 100], 0)], 0, false);
        // central directory's compressed and uncompressed sizes: claim 4 GiB - 2
        let c = bytes.windows(4).position(|w| w == CENTRAL_HEADER.to_le_bytes()).unwrap();
        bytes[c + 20..c + 28].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]);
        let a = Archive::parse(&bytes).unwrap();
        let e = a.read(&a.entries[0]).unwrap_err();
        assert!(e.contains("beyond the file"), "{e}");
        // method 12 (bzip2)
        let mut bytes = write_zip(&[("x", &[0u8; 10], 0)], 0, false);
        let c = bytes.windows(4).position(|w| w == CENTRAL_HEADER.to_le_bytes()).unwrap();
        bytes[c + 10] = 12;
        let a = Archive::parse(&bytes).unwrap();
        let e = a.read(&a.entries[0]).unwrap_err();
        assert!(e.contains("bzip2"), "{e}");
        // a deflated entry claiming a size no deflate stream reaches
        let mut bytes = write_zip(&[("x", &[0u8; 10], 8)], 0, false);
        let c = bytes.windows(4).position(|w| w == CENTRAL_HEADER.to_le_bytes()).unwrap();
        bytes[c + 24..c + 28].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let a = Archive::parse(&bytes).unwrap();
        let e = a.read(&a.entries[0]).unwrap_err();
        assert!(e.contains("more than deflate"), "{e}");
        // an entry count beyond what the directory can hold
        let mut bytes = write_zip(&[("x", &[0u8; 10], 0)], 0, false);
        let end = bytes.len() - 22;
        bytes[end + 10..end + 12].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert!(Archive::parse(&bytes).unwrap_err().contains("claims 65520 entries"));
    }
}
