//! Image archives (`docker save`, OCI archives): the tar is indexed once and its members are read
//! in place, by offset. Nothing is extracted, so no member is ever created on the host, and only
//! regular-file members can be read: a symlink, hard link, FIFO or device member is refused when
//! it is asked for (it could otherwise name a host file or block the reader forever).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open image archive {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image archive {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("cannot decompress image archive {path} into {scratch}")]
    Decompress {
        path: PathBuf,
        scratch: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image archive {path} is not a valid tar archive")]
    Tar {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image archive {path} is empty")]
    Empty { path: PathBuf },
    #[error("image archive {path} has no member {member:?}")]
    Missing { path: PathBuf, member: String },
    #[error(
        "member {member:?} of image archive {path} is a {kind}, not a regular file: an image \
         archive must hold its manifests and blobs as regular files"
    )]
    NotAFile {
        path: PathBuf,
        member: String,
        kind: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Member {
    kind: &'static str,
    offset: u64,
    size: u64,
}

pub struct Archive {
    path: PathBuf,
    file: File,
    members: HashMap<String, Member>,
}

/// A member name with `./` and empty components dropped; `None` for names with `..`, which no
/// manifest may refer to.
pub fn normalize_member(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Regular | tar::EntryType::Continuous => "regular file",
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        _ => "special entry",
    }
}

impl Archive {
    /// Indexes the archive at `path`; a gzip-compressed archive is first decompressed into an
    /// unnamed file in `scratch`.
    pub fn open(path: &Path, scratch: &Path) -> Result<Self, ArchiveError> {
        let open_err = |source| ArchiveError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::open_regular(path).map_err(|e| match e {
            crate::OpenRegularError::NotRegular => ArchiveError::NotRegular {
                path: path.to_path_buf(),
            },
            crate::OpenRegularError::Io(e) => open_err(e),
        })?;
        let mut head = BufReader::new(&file);
        let gzip = head
            .fill_buf()
            .map_err(open_err)?
            .starts_with(&[0x1f, 0x8b]);
        drop(head);
        (&file).rewind().map_err(open_err)?;
        let file = if gzip {
            let dec = |source| ArchiveError::Decompress {
                path: path.to_path_buf(),
                scratch: scratch.to_path_buf(),
                source,
            };
            std::fs::create_dir_all(scratch).map_err(dec)?;
            let mut out = tempfile::tempfile_in(scratch).map_err(dec)?;
            let mut src = flate2::read::MultiGzDecoder::new(BufReader::new(&file));
            io::copy(&mut src, &mut out).map_err(dec)?;
            out
        } else {
            file
        };
        let tar_err = |source| ArchiveError::Tar {
            path: path.to_path_buf(),
            source,
        };
        let mut members = HashMap::new();
        {
            let mut reader = &file;
            reader.rewind().map_err(tar_err)?;
            let mut archive = tar::Archive::new(reader);
            for entry in archive.entries_with_seek().map_err(tar_err)? {
                let entry = entry.map_err(tar_err)?;
                let name = entry.path_bytes();
                let Some(name) = normalize_member(&String::from_utf8_lossy(&name)) else {
                    continue;
                };
                members.insert(
                    name,
                    Member {
                        kind: kind_name(entry.header().entry_type()),
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            }
        }
        if members.is_empty() {
            return Err(ArchiveError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `name` is a member (of any kind).
    pub fn contains(&self, name: &str) -> bool {
        normalize_member(name).is_some_and(|n| self.members.contains_key(&n))
    }

    /// A reader of the regular-file member `name`, and its size.
    pub fn open_member(&self, name: &str) -> Result<(MemberReader<'_>, u64), ArchiveError> {
        let missing = || ArchiveError::Missing {
            path: self.path.clone(),
            member: name.to_string(),
        };
        let norm = normalize_member(name).ok_or_else(missing)?;
        let m = self.members.get(&norm).ok_or_else(missing)?;
        if m.kind != "regular file" {
            return Err(ArchiveError::NotAFile {
                path: self.path.clone(),
                member: name.to_string(),
                kind: m.kind,
            });
        }
        Ok((
            MemberReader {
                file: &self.file,
                pos: m.offset,
                end: m.offset + m.size,
            },
            m.size,
        ))
    }
}

/// Positional reads of one member: no shared file offset.
pub struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}
