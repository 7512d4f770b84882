//! How much memory the server's compiles may use at once, and the live signals that hold
//! new starts while memory is short whatever the predictions say.

use std::path::Path;

use super::cgroup::{self, Version};

/// The share of memory a default budget takes: of the smaller of RAM and the limit of the
/// server's cgroup. The rest is for the build tool, the linker's page cache and the desktop.
pub const DEFAULT_SHARE: f64 = 0.8;

/// `memory_limit` as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitSetting {
    /// A number of bytes (`12G`, `12884901888`).
    Bytes(u64),
    /// A share of the smaller of RAM and the cgroup limit (`80%` is 0.8).
    Share(f64),
    /// `off`: no memory admission (compiles are still measured).
    Off,
}

impl LimitSetting {
    /// Parses `12G`, a plain number of bytes, `80%` or `off`; None for anything else.
    pub fn parse(text: &str) -> Option<LimitSetting> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Some(LimitSetting::Off);
        }
        if let Some(percent) = text.strip_suffix('%') {
            let share: f64 = percent.trim().parse().ok()?;
            return (share > 0.0 && share <= 100.0).then_some(LimitSetting::Share(share / 100.0));
        }
        crate::units::parse_size(text)
            .filter(|b| *b > 0)
            .map(LimitSetting::Bytes)
    }
}

/// The budget in force and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Bytes; `u64::MAX` when admission is off.
    pub bytes: u64,
    /// For people: "memory_limit = 12 GiB", "80% of RAM (23.5 GiB)"…
    pub source: String,
}

/// The budget for `setting` on a machine with `ram` bytes whose server sits under a cgroup
/// limit of `cgroup_limit` bytes (the lowest up the hierarchy), if any.
pub fn budget(setting: Option<LimitSetting>, ram: u64, cgroup_limit: Option<u64>) -> Budget {
    let (base, base_name) = match cgroup_limit {
        Some(limit) if limit < ram => (limit, "the server's cgroup limit"),
        _ => (ram, "RAM"),
    };
    let share = |share: f64| (base as f64 * share) as u64;
    match setting {
        Some(LimitSetting::Off) => Budget {
            bytes: u64::MAX,
            source: "off (memory_limit = off)".into(),
        },
        Some(LimitSetting::Bytes(bytes)) => Budget {
            bytes,
            source: format!("memory_limit = {}", gib(bytes)),
        },
        Some(LimitSetting::Share(s)) => Budget {
            bytes: share(s),
            source: format!(
                "memory_limit = {}% of {base_name} ({})",
                s * 100.0,
                gib(base)
            ),
        },
        None => Budget {
            bytes: share(DEFAULT_SHARE),
            source: format!(
                "default: {}% of {base_name} ({})",
                DEFAULT_SHARE * 100.0,
                gib(base)
            ),
        },
    }
}

/// Bytes for people (`1.5 GiB`, `250.0 MiB`).
pub fn gib(bytes: u64) -> String {
    crate::stats::human_bytes(bytes)
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo` (bytes).
pub fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((kib("MemTotal")? << 10, kib("MemAvailable")? << 10))
}

/// What the machine says about memory now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// `MemAvailable` (bytes).
    pub available: Option<u64>,
    /// The server's cgroup: its limit less its working set (bytes).
    pub cgroup_headroom: Option<u64>,
    /// `some avg10` of `/proc/pressure/memory` (percent of the last 10 s in which some task
    /// stalled on memory; on cgroup v1 this is the whole host's).
    pub pressure: Option<f64>,
}

/// Pressure (`some avg10`, percent) at and above which new starts wait.
pub const PRESSURE_HOLD: f64 = 10.0;

impl Signals {
    /// Reads them; `group` is the server's own cgroup.
    pub fn read(group: Option<(&Path, Version)>) -> Signals {
        let cgroup_headroom = group.and_then(|(dir, version)| {
            let limit = cgroup::hierarchy_limit(dir, version)?;
            Some(limit.saturating_sub(cgroup::working_set(dir, version)?))
        });
        let pressure = std::fs::read_to_string("/proc/pressure/memory")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("some "))?;
                line.split(' ')
                    .find_map(|w| w.strip_prefix("avg10="))?
                    .parse()
                    .ok()
            });
        Signals {
            available: meminfo().map(|(_, available)| available),
            cgroup_headroom,
            pressure,
        }
    }

    /// Why a start of `need` bytes must wait now, or None. `reserve` is kept free beyond it.
    pub fn hold(&self, need: u64, reserve: u64) -> Option<&'static str> {
        let want = need.saturating_add(reserve);
        if self.available.is_some_and(|a| a < want) {
            return Some("MemAvailable");
        }
        if self.cgroup_headroom.is_some_and(|h| h < want) {
            return Some("cgroup usage near its limit");
        }
        if self.pressure.is_some_and(|p| p >= PRESSURE_HOLD) {
            return Some("memory pressure");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn parses_limits() {
        assert_eq!(
            LimitSetting::parse("12G"),
            Some(LimitSetting::Bytes(12 * GIB))
        );
        assert_eq!(LimitSetting::parse("4096"), Some(LimitSetting::Bytes(4096)));
        assert_eq!(LimitSetting::parse(" 80% "), Some(LimitSetting::Share(0.8)));
        assert_eq!(LimitSetting::parse("OFF"), Some(LimitSetting::Off));
        for bad in ["", "0", "150%", "0%", "lots", "-1G"] {
            assert_eq!(LimitSetting::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_default_is_a_share_of_the_smaller_of_ram_and_the_cgroup() {
        let b = budget(None, 10 * GIB, None);
        assert_eq!(b.bytes, 8 * GIB);
        assert!(b.source.contains("of RAM"), "{}", b.source);
        let b = budget(None, 10 * GIB, Some(5 * GIB));
        assert_eq!(b.bytes, 4 * GIB);
        assert!(b.source.contains("cgroup"), "{}", b.source);
        let b = budget(Some(LimitSetting::Share(0.5)), 10 * GIB, Some(20 * GIB));
        assert_eq!(b.bytes, 5 * GIB);
        assert_eq!(budget(Some(LimitSetting::Bytes(7)), GIB, None).bytes, 7);
        assert_eq!(budget(Some(LimitSetting::Off), GIB, None).bytes, u64::MAX);
    }

    #[test]
    fn signals_hold_when_short() {
        let calm = Signals {
            available: Some(8 * GIB),
            cgroup_headroom: Some(4 * GIB),
            pressure: Some(0.5),
        };
        assert_eq!(calm.hold(GIB, GIB), None);
        assert_eq!(calm.hold(4 * GIB, GIB), Some("cgroup usage near its limit"));
        assert_eq!(calm.hold(9 * GIB, 0), Some("MemAvailable"));
        let stalled = Signals {
            pressure: Some(25.0),
            ..calm
        };
        assert_eq!(stalled.hold(0, 0), Some("memory pressure"));
        assert_eq!(Signals::default().hold(u64::MAX, 0), None);
    }
}
