//! Per-compile memory cgroups: the peak of a compile's whole process tree (the gcc driver
//! with cc1 and as at once, rustc with its linker), and whether the OOM killer took
//! something in it.
//!
//! Groups are made under the server's own memory cgroup and reused: one per running
//! compile, its peak restarted between uses (v1: `memory.max_usage_in_bytes`; v2:
//! `memory.peak`, resettable since Linux 6.12; where it is not, the group is made anew).
//! A group is never emptied: that would reclaim the page cache its compile charged to it,
//! the outputs just written and the sources and libraries read, which the build's next
//! compiles read again. What stays charged is the group's baseline, taken off its
//! figures. The child joins its group itself before exec, by writing `0`
//! (itself) into the group's `cgroup.procs`, so every process it starts is counted too.
//! Sources: the kernel's Documentation/admin-guide/cgroup-v1/memory.rst and cgroup-v2.rst.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which cgroup interface a group speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The v1 memory controller (`memory.max_usage_in_bytes`, `memory.oom_control`).
    V1,
    /// The unified hierarchy (`memory.peak`, `memory.events`).
    V2,
}

/// The memory cgroup of this process: its directory and interface, from
/// `/proc/self/cgroup` and `/proc/self/mountinfo`. Err says why there is none.
pub fn own_group() -> Result<(PathBuf, Version), String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    locate(&cgroup, &mountinfo)
}

/// [`own_group`] from the two files' text.
pub fn locate(cgroup: &str, mountinfo: &str) -> Result<(PathBuf, Version), String> {
    // v1: "4:memory:/a/b"; v2: "0::/a/b".
    let v1 = cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let (path, version) = match v1 {
        Some(path) => (path, Version::V1),
        None => match cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
            Some(path) => (path, Version::V2),
            None => return Err("no memory cgroup in /proc/self/cgroup".into()),
        },
    };
    // mountinfo: id parent major:minor root mountpoint options - fstype source superoptions
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let wanted = match version {
            Version::V1 => {
                *fstype == "cgroup"
                    && tail
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory"))
            }
            Version::V2 => *fstype == "cgroup2",
        };
        if !wanted {
            continue;
        }
        // Inside a container the mount's root is the group the container sits in.
        let relative = match path.strip_prefix(root.trim_end_matches('/')) {
            Some(rest) => rest.trim_start_matches('/'),
            None => continue,
        };
        return Ok((Path::new(point).join(relative), version));
    }
    Err(format!("the memory cgroup {path} is not mounted here"))
}

/// The lowest memory limit on the way from `dir` up to the root (bytes), if any.
pub fn hierarchy_limit(dir: &Path, version: Version) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    let mut at = Some(dir);
    while let Some(dir) = at {
        let file = match version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        };
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            break;
        };
        // v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages), v2 with "max".
        if let Ok(limit) = text.trim().parse::<u64>()
            && limit < 1 << 60
        {
            lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
        }
        at = dir.parent();
    }
    lowest
}

/// Bytes the group uses that cannot simply be dropped: its usage less its inactive file
/// pages (the working set, as container runtimes count it).
pub fn working_set(dir: &Path, version: Version) -> Option<u64> {
    let (usage, stat_key) = match version {
        Version::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
        Version::V2 => ("memory.current", "inactive_file"),
    };
    let usage = read_number(&dir.join(usage))?;
    let inactive = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| field(&s, stat_key))
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// One per-compile group.
#[derive(Debug)]
pub struct Group {
    dir: PathBuf,
    version: Version,
    procs: CString,
    /// Bytes still charged from earlier compiles (page cache) when this one took it.
    baseline: u64,
}

impl Group {
    /// `cgroup.procs` of the group, for the child to write `0` into before exec.
    pub fn procs(&self) -> &CString {
        &self.procs
    }

    /// The highest memory the group's processes used at once since they started, beyond
    /// the baseline (bytes). Page cache of the baseline reclaimed meanwhile makes this an
    /// underestimate by at most that much.
    pub fn peak(&self) -> Option<u64> {
        read_number(&self.dir.join(match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        }))
        .map(|peak| peak.saturating_sub(self.baseline))
    }

    /// Memory the group's processes use now beyond the baseline (bytes).
    pub fn usage(&self) -> Option<u64> {
        self.charged().map(|now| now.saturating_sub(self.baseline))
    }

    /// Everything charged to the group now, the baseline included (bytes).
    fn charged(&self) -> Option<u64> {
        read_number(&self.dir.join(match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }))
    }

    /// How many processes the OOM killer took in this group, ever.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        field(
            &std::fs::read_to_string(self.dir.join(file)).ok()?,
            "oom_kill",
        )
    }

    /// Restarts the group's peak at what is charged now. False where the peak cannot be
    /// restarted (the group must be made anew).
    fn reset(&self) -> bool {
        match self.version {
            Version::V1 => std::fs::write(self.dir.join("memory.max_usage_in_bytes"), "0").is_ok(),
            Version::V2 => std::fs::write(self.dir.join("memory.peak"), "reset").is_ok(),
        }
    }
}

/// The pool of per-compile groups under one parent.
#[derive(Debug)]
pub struct Pool {
    parent: PathBuf,
    version: Version,
    free: Mutex<Vec<Group>>,
    made: AtomicU64,
}

impl Pool {
    /// A pool under the server's own group. Err says why there can be none (no memory
    /// cgroup, or no right to make groups in it).
    pub fn for_this_process() -> Result<Pool, String> {
        let (dir, version) = own_group()?;
        if version == Version::V2 {
            // A v2 group with processes cannot give its children controllers; whoever set
            // this machine up for it gave the server a group where `+memory` works.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory");
        }
        let pool = Pool::under(dir.clone(), version);
        pool.remove_stale();
        // Prove it once: make, use and return one group.
        let group = pool
            .take()
            .map_err(|e| format!("cannot make a memory cgroup in {}: {e}", dir.display()))?;
        if group.peak().is_none() {
            let _ = std::fs::remove_dir(&group.dir);
            return Err(format!(
                "memory cgroups in {} have no peak to read",
                dir.display()
            ));
        }
        pool.give_back(group);
        Ok(pool)
    }

    /// A pool under `parent` (groups are made on demand).
    pub fn under(parent: PathBuf, version: Version) -> Pool {
        Pool {
            parent,
            version,
            free: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        }
    }

    /// The interface the pool's groups speak.
    pub fn version(&self) -> Version {
        self.version
    }

    /// A group for one compile: a free one, or a new one.
    pub fn take(&self) -> io::Result<Group> {
        if let Some(mut group) = self.free.lock().unwrap().pop() {
            group.baseline = group.charged().unwrap_or(0);
            return Ok(group);
        }
        self.take_new()
    }

    /// A group made now.
    fn take_new(&self) -> io::Result<Group> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .parent
            .join(format!("cachet-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::other("a cgroup path with a NUL byte"))?;
        Ok(Group {
            dir,
            version: self.version,
            procs,
            baseline: 0,
        })
    }

    /// Makes groups until `count` are free, so that the first compiles find them ready:
    /// making a memory cgroup blocks for 7-14 ms (v1 here, five `mkdir`s in a row), on
    /// the thread that asks. Errors: the first group that cannot be made.
    pub fn prefill(&self, count: usize) -> io::Result<()> {
        while self.free.lock().unwrap().len() < count {
            let group = self.take_new()?;
            self.free.lock().unwrap().push(group);
        }
        Ok(())
    }

    /// Returns a group whose processes have all exited.
    pub fn give_back(&self, group: Group) {
        if group.reset() {
            self.free.lock().unwrap().push(group);
        } else {
            let _ = std::fs::remove_dir(&group.dir);
        }
    }
}

impl Pool {
    /// Removes the groups not in use (at the server's end).
    pub fn remove_free(&self) {
        for group in self.free.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir(&group.dir);
        }
    }

    /// Removes the groups of servers that are gone (`cachet-<pid>-<n>` of a dead pid,
    /// left by a server that was killed): an empty group can go at any time.
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("cachet-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let alive = rustix::process::Pid::from_raw(pid)
                .is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
            if !alive {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.remove_free();
    }
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The number after `name` on its own line of a `key value` file.
pub(crate) fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn finds_a_v1_memory_group() {
        let cgroup = "5:devices:/\n4:memory:/ci/job7\n1:cpu:/\n0::/\n";
        assert_eq!(
            locate(cgroup, MOUNTINFO_V1).unwrap(),
            (PathBuf::from("/sys/fs/cgroup/memory/ci/job7"), Version::V1)
        );
    }

    #[test]
    fn finds_a_v2_group_under_a_container_root() {
        let mountinfo = "40 30 0:33 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate("0::/kubepods/pod1/c2\n", mountinfo).unwrap(),
            (PathBuf::from("/sys/fs/cgroup/c2"), Version::V2)
        );
    }

    #[test]
    fn says_why_there_is_none() {
        assert!(
            locate("", MOUNTINFO_V1)
                .unwrap_err()
                .contains("no memory cgroup")
        );
        assert!(
            locate("0::/x\n", MOUNTINFO_V1)
                .unwrap_err()
                .contains("not mounted")
        );
    }

    #[test]
    fn reads_key_value_files() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(field(oom, "oom_kill"), Some(3));
        assert_eq!(field(oom, "oom"), None);
    }

    #[test]
    fn a_prefilled_pool_hands_out_groups_it_made_ahead() {
        // A plain directory stands in for the cgroup tree: the pool only makes directories.
        let root = tempfile::tempdir().unwrap();
        let pool = Pool::under(root.path().to_owned(), Version::V1);
        pool.prefill(2).unwrap();
        let made = || std::fs::read_dir(root.path()).unwrap().count();
        assert_eq!(made(), 2);
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!(made(), 2, "taking a free group makes none");
        assert_ne!(a.dir, b.dir);
        // Two in use: filling up to two free again makes two more; none is made twice.
        pool.prefill(2).unwrap();
        assert_eq!(made(), 4);
        pool.prefill(1).unwrap();
        assert_eq!(made(), 4);
        drop((a, b));
        pool.remove_free();
        assert_eq!(made(), 2, "the two in use stay until given back");
    }

    #[test]
    fn limits_are_the_lowest_up_the_tree_and_a_fake_tree_works() {
        let root = tempfile::tempdir().unwrap();
        let child = root.path().join("a");
        std::fs::create_dir(&child).unwrap();
        std::fs::write(root.path().join("memory.limit_in_bytes"), "1000\n").unwrap();
        std::fs::write(child.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(hierarchy_limit(&child, Version::V1), Some(1000));
        std::fs::write(child.join("memory.usage_in_bytes"), "500\n").unwrap();
        std::fs::write(
            child.join("memory.stat"),
            "cache 1\ntotal_inactive_file 200\n",
        )
        .unwrap();
        assert_eq!(working_set(&child, Version::V1), Some(300));
    }
}
