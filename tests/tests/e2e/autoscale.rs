//! Autoscaling end to end: real deisd and deis on the local scheduler. A CPU-burning
//! request load (the hello app's `/burn`) scales web up past one unit, idling scales it
//! back to the minimum, and the changes go up, then down, never back and forth.

use deis_e2e::{Load, Request, T, daemon_with_user, deploy_hello, up_pods, wait_for};

/// The web counts of the autoscaler's scale lines in the app's log, oldest first
/// (`deis[controller]: Scaled to web=3 worker=0 by autoscaler`).
fn autoscaled_counts(logs: &str) -> Vec<u32> {
    logs.lines()
        .filter(|l| l.trim_end().ends_with("by autoscaler"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("web=")?.parse().ok()))
        .collect()
}

/// Whether `counts` rise step by step to one peak and then fall: no flapping.
fn up_then_down(counts: &[u32]) -> bool {
    let peak = counts.iter().enumerate().max_by_key(|(_, c)| **c).map_or(0, |(i, _)| i);
    counts[..=peak].windows(2).all(|w| w[0] < w[1]) && counts[peak..].windows(2).all(|w| w[0] > w[1])
}

#[test]
fn cpu_load_scales_web_up_and_idling_scales_it_back_down() {
    // Short windows so the test takes seconds; the loop is the one deisd runs with its
    // defaults (10 s, 30 s up, 3 min down).
    let (d, cli) = daemon_with_user(&[
        "--telemetry-interval",
        "500ms",
        "--autoscale-interval",
        "500ms",
        "--autoscale-up-window",
        "2s",
        "--autoscale-down-window",
        "4s",
    ]);
    let _dir = deploy_hello(&d, &cli, "burner");
    let logs = || cli.run(&["logs", "-a", "burner", "-n", "1000", "--source", "deis"]).ok();
    let out = cli.run(&["autoscale:set", "web", "--min=1", "--max=3", "--cpu-percent=50", "-a", "burner"]).ok();
    assert!(out.contains("done"), "{out}");
    let listed = cli.run(&["autoscale:list", "-a", "burner"]).ok();
    assert!(listed.contains("web:") && listed.contains("max 3,") && listed.contains("cpu 50%"), "{listed}");
    assert_eq!(up_pods(&cli, "burner", "web").len(), 1);

    // Each request burns 50 ms of cpu; eight at a time keep one unit far above 50%.
    let host = format!("burner.{}", d.domain);
    let load = Load::requests(d.router, Request::get("/burn?ms=50").host(&host), 8);
    let up = wait_for(T, "the autoscaler scaling web above 1", || {
        let counts = autoscaled_counts(&logs());
        counts.first().copied().filter(|n| *n > 1)
    });
    let served = load.served();
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "requests failed while scaling up: {failures:?}");
    assert!(served > 0);
    assert!(up <= 3, "above --max: web={up}");
    wait_for(T, "more than one web unit up", || (up_pods(&cli, "burner", "web").len() > 1).then_some(()));

    // Idle: back to the minimum, after the down-window.
    let counts = wait_for(T, "the autoscaler scaling web back to 1", || {
        let counts = autoscaled_counts(&logs());
        if counts.last() == Some(&1) { Ok(counts) } else { Err(counts) }
    });
    assert!(up_then_down(&counts), "the autoscaler flapped: web went {counts:?}\n{}", d.log());
    wait_for(T, "one web unit left", || {
        let web = up_pods(&cli, "burner", "web");
        if web.len() == 1 { Ok(()) } else { Err(web.len()) }
    });

    // Unset: the bounds are gone.
    cli.run(&["autoscale:unset", "web", "-a", "burner"]).ok();
    let listed = cli.run(&["autoscale:list", "-a", "burner"]).ok();
    assert!(listed.contains("No autoscaling"), "{listed}");
    let again = cli.run(&["autoscale:unset", "web", "-a", "burner"]);
    assert_ne!(again.code, 0, "unsetting bounds that are not there: {}", again.stdout);
}

#[test]
fn scale_sequences_are_judged_for_flapping() {
    assert!(up_then_down(&[2, 3, 1]));
    assert!(up_then_down(&[3, 1]));
    assert!(up_then_down(&[2, 1]));
    assert!(!up_then_down(&[2, 1, 2, 1]));
    assert!(!up_then_down(&[3, 2, 3, 1]));
    let logs = "2026-12-06T20:00:00Z deis[controller]: Scaled to web=3 worker=0 by autoscaler\n\
                2026-12-06T20:00:01Z deis[controller]: Scaled to web=2 by alice\n\
                2026-12-06T20:00:09Z deis[controller]: Scaled to web=1 worker=0 by autoscaler\n";
    assert_eq!(autoscaled_counts(logs), vec![3, 1]);
}
