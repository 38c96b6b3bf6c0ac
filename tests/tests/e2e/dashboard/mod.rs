//! The dashboard at `/dashboard/` in a real headless Chromium (over the DevTools
//! protocol): a login form for a visitor, plots with data after traffic, live updates
//! without a reload, nothing of other users' apps, and no console error throughout.

mod cdp;

use deis_e2e::{Deisd, Load, deploy_hello};
use deis_test_support::skip_without;

use cdp::{Browser, Page};

/// Logs in through the page's form as `user` (password `pw-<user>`, as `Cli::register`
/// sets it) and waits until the dashboard greets them.
fn log_in(page: &mut Page, user: &str) {
    page.wait_true("the login form", "!document.getElementById('login').hidden");
    page.eval(&format!(
        "(() => {{ const f = document.getElementById('login');
            f.elements.username.value = {user:?}; f.elements.password.value = {pw:?};
            f.requestSubmit(); return true; }})()",
        pw = format!("pw-{user}"),
    ));
    page.wait_true(
        &format!("the dashboard of {user}"),
        &format!("document.getElementById('who').textContent === {user:?} && !document.getElementById('data').hidden"),
    );
}

/// An expression: how many refreshes the page completed (its `#updated` marker).
const REFRESHES: &str = "Number(document.getElementById('updated').dataset.refreshes || 0)";

/// An expression: whether `selector`'s canvas has a stroke of its line colour in its
/// upper half, i.e. the plotted line rises above the zero baseline (drawn at the
/// bottom when every value is zero).
fn plotted_above_zero(selector: &str) -> String {
    format!(
        "(() => {{ const c = document.querySelector({selector:?}); if (!c || !c.width) return false;
            const want = c.getContext('2d').strokeStyle;
            const [r, g, b] = [1, 3, 5].map((i) => parseInt(want.slice(i, i + 2), 16));
            // Read a copy, so that the page's canvas is never read back (a console warning).
            const copy = document.createElement('canvas'); copy.width = c.width; copy.height = c.height;
            const cx = copy.getContext('2d', {{ willReadFrequently: true }}); cx.drawImage(c, 0, 0);
            const px = cx.getImageData(0, 0, c.width, Math.floor(c.height / 2)).data;
            for (let i = 0; i < px.length; i += 4)
              if (Math.abs(px[i] - r) < 24 && Math.abs(px[i + 1] - g) < 24 && Math.abs(px[i + 2] - b) < 24 && px[i + 3] > 128) return true;
            return false; }})()"
    )
}

#[test]
fn the_dashboard_plots_live_data_for_its_user_only_without_console_errors() {
    if skip_without("chromium", "chromium") {
        return;
    }
    let d = Deisd::start_with(&["--telemetry-interval", "1s"]);
    // The first user is the admin (who sees every app); the others are plain users.
    let admin = d.cli();
    admin.register(&d, "admin");
    let owner = d.cli();
    owner.register(&d, "owner");
    let stranger = d.cli();
    stranger.register(&d, "stranger");
    stranger.run(&["create", "elsewhere", "--no-remote"]).ok();
    let _dir = deploy_hello(&d, &owner, "hello");
    let load = Load::start(d.router, &format!("hello.{}", d.domain), 1);
    load.wait_more(50);

    let browser = Browser::launch();
    let mut page = browser.page();
    let dashboard = format!("{}/dashboard/", d.url());
    page.navigate(&dashboard);

    // A visitor sees the login form and no data.
    page.wait_true("the login form", "document.readyState === 'complete' && !document.getElementById('login').hidden");
    assert_eq!(page.eval("document.getElementById('data').hidden"), true);
    assert_eq!(page.eval("document.querySelectorAll('#apps .app').length"), 0);

    // The owner: the app's plots show the traffic, its unit its cpu and memory, and
    // its releases are listed.
    log_in(&mut page, "owner");
    page.wait_true(
        "requests counted in hello's box",
        "Number((document.getElementById('app-hello') || {dataset: {}}).dataset.requests || 0) > 0",
    );
    page.wait_true("the request rate plotted", &plotted_above_zero("#app-hello canvas.rate"));
    page.wait_true("the p99 latency plotted", &plotted_above_zero("#app-hello canvas.latency"));
    page.wait_true(
        "hello's unit with cpu and memory",
        "[...document.querySelectorAll('#app-hello table.units tbody tr')].some((tr) =>
            tr.cells[0].textContent === 'hello.web.1' && /%$/.test(tr.cells[1].textContent)
            && / MiB$/.test(tr.cells[2].textContent))",
    );
    page.wait_true(
        "hello's release v2 in the events",
        "[...document.querySelectorAll('#events tbody tr')].some((tr) =>
            tr.cells[1].textContent === 'hello' && tr.cells[2].textContent === 'release')",
    );
    assert!(
        page.eval("document.getElementById('app-elsewhere') === null") == true,
        "the owner sees no box of the stranger's app"
    );

    // Live: new traffic reaches the page without a reload (the marker set on this
    // document survives, and more refreshes ran).
    page.eval("window.loadedOnce = true");
    let seen = page.eval("Number(document.getElementById('app-hello').dataset.requests)").as_f64().unwrap();
    let refreshes = page.eval(REFRESHES).as_f64().unwrap();
    load.wait_more(50);
    page.wait_true(
        "more requests shown without a reload",
        &format!(
            "window.loadedOnce === true && {REFRESHES} > {refreshes}
                && Number(document.getElementById('app-hello').dataset.requests) > {seen}"
        ),
    );
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");

    // Another user, after logging out: their own app only, nothing of hello.
    page.eval("document.getElementById('logout').click(), true");
    log_in(&mut page, "stranger");
    let start = page.eval(REFRESHES).as_f64().unwrap();
    page.wait_true("two refreshes for the stranger", &format!("{REFRESHES} >= {start} + 2"));
    assert_eq!(page.eval("document.getElementById('app-elsewhere') !== null"), true);
    assert_eq!(page.eval("document.getElementById('app-hello') === null"), true);
    let text = page.eval("document.body.innerText").as_str().unwrap().to_string();
    assert!(!text.contains("hello"), "the stranger's dashboard shows the owner's app:\n{text}");

    let problems = page.problems();
    assert!(problems.is_empty(), "console problems:\n{}\nchromium:\n{}", problems.join("\n"), browser.log());
}
