//! An input root as the REAPI lays one out: a Merkle tree of `Directory` messages, each
//! naming its files by digest and its subdirectories by the digest of their own message.
//!
//! cachet mirrors the client's file system: a file at `/usr/include/stdio.h` is the
//! input root's `usr/include/stdio.h`, so a worker that runs the action with the input
//! root as `/` (chrooted) sees every path the compile names where the client has it.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::reapi::digest_of_message;
use crate::reapi::proto::{Digest, Directory, DirectoryNode, FileNode};

/// A file of the tree: its content's digest and whether it is executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub digest: Digest,
    pub executable: bool,
}

#[derive(Default)]
struct Node {
    files: BTreeMap<String, TreeFile>,
    dirs: BTreeMap<String, Node>,
}

/// A tree being assembled from absolute paths.
#[derive(Default)]
pub struct InputTree {
    root: Node,
}

impl InputTree {
    /// Adds the file at absolute `path`. Errors: a relative path, one with `..`, a name
    /// that is not UTF-8 (the protocol's names are strings), or a path that is a file in
    /// one place and a directory in another.
    pub fn add_file(&mut self, path: &Path, file: TreeFile) -> io::Result<()> {
        let (dir, name) = self.parent_of(path)?;
        if dir.dirs.contains_key(&name) {
            return Err(invalid(path, "is a directory elsewhere in the tree"));
        }
        dir.files.insert(name, file);
        Ok(())
    }

    /// Adds the directory at absolute `path` (and its parents), empty unless files go in.
    pub fn add_dir(&mut self, path: &Path) -> io::Result<()> {
        let mut node = &mut self.root;
        for name in names(path)? {
            if node.files.contains_key(&name) {
                return Err(invalid(path, "is a file elsewhere in the tree"));
            }
            node = node.dirs.entry(name).or_default();
        }
        Ok(())
    }

    fn parent_of(&mut self, path: &Path) -> io::Result<(&mut Node, String)> {
        let mut names = names(path)?;
        let name = names.pop().ok_or_else(|| invalid(path, "names no file"))?;
        let mut node = &mut self.root;
        for dir in names {
            if node.files.contains_key(&dir) {
                return Err(invalid(path, "runs through a file"));
            }
            node = node.dirs.entry(dir).or_default();
        }
        Ok((node, name))
    }

    /// The root's digest, and every `Directory` message by digest (each encoded once,
    /// children before parents).
    pub fn finish(&self) -> (Digest, Vec<(Digest, Vec<u8>)>) {
        let mut blobs = Vec::new();
        let root = encode(&self.root, &mut blobs);
        (root, blobs)
    }
}

/// Encodes `node` and what is under it; its digest. The protocol wants each list sorted
/// by name, which the maps give.
fn encode(node: &Node, blobs: &mut Vec<(Digest, Vec<u8>)>) -> Digest {
    let directories = node
        .dirs
        .iter()
        .map(|(name, child)| DirectoryNode {
            name: name.clone(),
            digest: Some(encode(child, blobs)),
        })
        .collect();
    let files = node
        .files
        .iter()
        .map(|(name, file)| FileNode {
            name: name.clone(),
            digest: Some(file.digest.clone()),
            is_executable: file.executable,
        })
        .collect();
    let (digest, bytes) = digest_of_message(&Directory {
        files,
        directories,
        symlinks: Vec::new(),
    });
    if !blobs.iter().any(|(d, _)| *d == digest) {
        blobs.push((digest.clone(), bytes));
    }
    digest
}

/// The names along absolute `path`.
fn names(path: &Path) -> io::Result<Vec<String>> {
    if !path.is_absolute() {
        return Err(invalid(path, "is not absolute"));
    }
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => match std::str::from_utf8(name.as_bytes()) {
                Ok(name) => out.push(name.to_owned()),
                Err(_) => return Err(invalid(path, "is not UTF-8")),
            },
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(path, "has a `..`"));
            }
        }
    }
    Ok(out)
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("input {} {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reapi::digest_of;
    use prost::Message as _;

    fn file(data: &[u8], executable: bool) -> TreeFile {
        TreeFile {
            digest: digest_of(data),
            executable,
        }
    }

    #[test]
    fn a_tree_mirrors_absolute_paths_with_sorted_lists_and_shared_directories() {
        let mut tree = InputTree::default();
        tree.add_file(Path::new("/usr/include/stdio.h"), file(b"s", false))
            .unwrap();
        tree.add_file(Path::new("/usr/bin/gcc"), file(b"g", true))
            .unwrap();
        tree.add_file(Path::new("/usr/include/a.h"), file(b"a", false))
            .unwrap();
        tree.add_dir(Path::new("/tmp")).unwrap();
        let (root, blobs) = tree.finish();
        let get = |d: &Digest| {
            let bytes = &blobs.iter().find(|(x, _)| x == d).unwrap().1;
            Directory::decode(bytes.as_slice()).unwrap()
        };
        let top = get(&root);
        let names: Vec<&str> = top.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["tmp", "usr"]);
        let usr = get(top.directories[1].digest.as_ref().unwrap());
        let include = get(usr.directories[1].digest.as_ref().unwrap());
        let files: Vec<&str> = include.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(files, ["a.h", "stdio.h"]);
        let bin = get(usr.directories[0].digest.as_ref().unwrap());
        assert!(bin.files[0].is_executable);
        // The empty `tmp` and nothing else is empty; each message once.
        assert_eq!(blobs.len(), 5);
        // The same files in another order make the same root.
        let mut again = InputTree::default();
        again.add_dir(Path::new("/tmp")).unwrap();
        again
            .add_file(Path::new("/usr/include/a.h"), file(b"a", false))
            .unwrap();
        again
            .add_file(Path::new("/usr/bin/gcc"), file(b"g", true))
            .unwrap();
        again
            .add_file(Path::new("/usr/include/stdio.h"), file(b"s", false))
            .unwrap();
        assert_eq!(again.finish().0, root);
    }

    #[test]
    fn relative_paths_dot_dots_and_file_directory_clashes_are_refused() {
        let mut tree = InputTree::default();
        assert!(tree.add_file(Path::new("a.c"), file(b"", false)).is_err());
        assert!(
            tree.add_file(Path::new("/a/../b"), file(b"", false))
                .is_err()
        );
        tree.add_file(Path::new("/x/y"), file(b"", false)).unwrap();
        assert!(
            tree.add_file(Path::new("/x/y/z"), file(b"", false))
                .is_err()
        );
        assert!(tree.add_dir(Path::new("/x/y")).is_err());
        assert!(tree.add_file(Path::new("/x"), file(b"", false)).is_err());
    }
}
