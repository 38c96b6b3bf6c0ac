use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::sys::{SpawnSpec, spawn};

const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 /docker/abc /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /tmp rw - tmpfs tmpfs rw
";

#[test]
fn mountinfo_lists_cgroup_mounts_with_their_controllers() {
    let mounts = parse_mountinfo(MOUNTINFO);
    assert_eq!(mounts.len(), 5, "{mounts:?}");
    assert_eq!(mounts[0].controllers.as_deref(), Some(&["cpu".to_string()][..]));
    assert_eq!(mounts[2].mount_point, PathBuf::from("/sys/fs/cgroup/my pids"), "octal escapes decoded");
    assert_eq!(mounts[2].root, "/docker/abc");
    assert_eq!(mounts[3].controllers.as_deref(), Some(&[][..]), "name=systemd holds no controller of ours");
    assert_eq!(mounts[4].controllers, None, "cgroup2");
}

#[test]
fn proc_cgroup_lines_parse() {
    let m = parse_proc_cgroup("4:memory:/process_api/6e\n1:cpu,cpuacct:/\n0::/user.slice\nbad line\n");
    assert_eq!(m.len(), 3);
    assert_eq!(m[0], Membership { controllers: vec!["memory".into()], path: "/process_api/6e".into() });
    assert_eq!(m[1].controllers, ["cpu", "cpuacct"]);
    assert!(m[2].controllers.is_empty());
    assert_eq!(m[2].path, "/user.slice");
}

#[test]
fn cgroup_dirs_follow_the_mount_root() {
    let mounts = parse_mountinfo(MOUNTINFO);
    let pids = &mounts[2];
    assert_eq!(cgroup_dir(pids, "/docker/abc/x"), Some(PathBuf::from("/sys/fs/cgroup/my pids/x")));
    assert_eq!(cgroup_dir(pids, "/docker/abcd"), None, "a sibling is not below the mount's root");
    assert_eq!(cgroup_dir(&mounts[0], "/"), Some(PathBuf::from("/sys/fs/cgroup/cpu/")));
}

#[test]
fn v1_layout_is_made_below_our_own_cgroups() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = |c: &str| CgroupMount {
        mount_point: tmp.path().join(c),
        root: "/".into(),
        controllers: Some(vec![c.to_string()]),
    };
    for c in ["memory", "pids"] {
        std::fs::create_dir_all(tmp.path().join(c).join("mine")).unwrap();
    }
    let own = parse_proc_cgroup("4:memory:/mine\n8:pids:/mine\n");
    let root = CgroupRoot::from_system(&[mount("memory"), mount("pids")], &own, "t1").unwrap();
    assert_eq!(
        root.layout(),
        &CgroupLayout::V1 {
            memory: Some(tmp.path().join("memory/mine/deis-t1")),
            cpu: None,
            cpuacct: None,
            pids: Some(tmp.path().join("pids/mine/deis-t1")),
        }
    );
    assert_eq!(root.version(), "v1");
    assert!(tmp.path().join("pids/mine/deis-t1").is_dir());
    assert!(CgroupRoot::from_system(&[], &own, "t2").is_err(), "nothing mounted: no cgroups, and it says so");
}

#[test]
fn quotas_are_per_period_with_a_floor() {
    assert_eq!(cpu_quota_us(500), 50_000);
    assert_eq!(cpu_quota_us(2000), 200_000);
    assert_eq!(cpu_quota_us(1), MIN_CPU_QUOTA_US);
    assert_eq!(keyed_value("low 0\noom 2\noom_kill 3\n", "oom_kill"), Some(3));
    assert_eq!(keyed_value("oom_kill_disable 0\n", "oom_kill"), None);
}

/// The real thing (this machine's hierarchies, as root): a child joins before exec,
/// its limits are written, `kill_all` empties the cgroup even of processes that left
/// the child's session.
#[tokio::test]
async fn a_child_runs_limited_in_its_cgroup_and_all_of_it_is_killed() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: cgroups need root here");
        return;
    }
    let tag = format!("test-{}", std::process::id());
    let root = CgroupRoot::detect(&tag).expect("root sees a writable cgroup hierarchy");
    let limits = CgroupLimits { memory_bytes: Some(64 << 20), cpu_millis: Some(500), pids_max: Some(50) };
    let cg = root.create("unit-1", &limits).unwrap();
    let child = spawn(SpawnSpec::new("/bin/sh").arg("-c").arg("setsid sleep 60 & exec sleep 60").cgroup(&cg)).unwrap();
    let pid = child.pid;
    let mine = cgroups_of(pid).unwrap();
    for dir in cg.dirs() {
        assert!(mine.iter().any(|(_, d)| d == dir), "{pid} is in {dir:?}: {mine:?}");
    }
    let read = |file: &str| cg.control(file).map(|p| std::fs::read_to_string(p).unwrap().trim().to_string());
    match root.layout() {
        CgroupLayout::V1 { .. } => {
            assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
            assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("50000"));
        }
        CgroupLayout::V2 { .. } => {
            assert_eq!(read("memory.max").as_deref(), Some("67108864"));
            assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
        }
    }
    assert_eq!(read("pids.max").as_deref(), Some("50"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cg.pids().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the background sleep never joined");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cg.kill_all(Duration::from_secs(5)) >= 2);
    assert!(cg.is_empty());
    let _ = child.exited.await;
    cg.remove();
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{dir:?} removed");
    }
    root.remove_if_unused();
}

proptest! {
    #[test]
    fn parsers_never_panic(text in "(\\PC{0,60}\n){0,8}") {
        let _ = parse_mountinfo(&text);
        let _ = parse_proc_cgroup(&text);
        let _ = keyed_value(&text, "oom_kill");
        let _ = unescape(&text);
    }
}
