//! A process's CPU time and resident memory, from `/proc` (Linux).

/// CPU seconds (user + system) and RSS in KiB of process `pid`, or `None` when it
/// cannot be read.
pub fn sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").trim().parse().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some((ticks / 100.0, rss))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_can_be_sampled() {
        let (cpu, rss) = super::sample(std::process::id()).unwrap_or_default();
        assert!(cpu >= 0.0 && rss > 0, "{cpu} {rss}");
    }
}
