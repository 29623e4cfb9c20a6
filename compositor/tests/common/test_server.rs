//! The in-process headless fencegate the kernel tests talk to, and their clients' surfaces.

use fencegate::testing::TestServer;
use fencegate::Config;
use fencegate_clients::{Client, ClientState, IgnoreEvents, WindowId};
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_client::{Dispatch, Proxy};

/// The output size of every kernel test server.
const SIZE: &str = "96x64";

/// Server logs with FENCEGATE_TEST_LOG=debug (an EnvFilter directive).
fn init_logging() {
    if let Ok(filter) = std::env::var("FENCEGATE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A headless fencegate (`Config::headless()`) with a 96x64 output.
pub fn headless_server() -> TestServer {
    init_logging();
    let mut config = Config::headless();
    config.size = SIZE.parse().unwrap();
    TestServer::start(config).expect("the test server starts")
}

/// A headless fencegate with a 96x64 output, configured from the command line plus `extra`.
pub fn headless_server_with_args(extra: &[&str]) -> TestServer {
    use clap::Parser as _;
    init_logging();
    let mut args = vec!["fencegate", "--backend", "headless", "--size", SIZE];
    args.extend_from_slice(extra);
    TestServer::start(Config::parse_from(args)).expect("the test server starts")
}

/// A new client of `server` with the global of interface `I` bound (at most `version`), which
/// the compositor must advertise.
pub fn client_with_global<I>(server: &TestServer, version: u32) -> (Client, I)
where
    I: Proxy + 'static,
    ClientState: Dispatch<I, IgnoreEvents>,
{
    let client = Client::connect_to(server.socket_str()).unwrap();
    let name = I::interface().name;
    assert!(
        client.state.has_global(name),
        "the compositor advertises {name}"
    );
    let global = client.bind_global::<I, _>(version, IgnoreEvents).unwrap();
    (client, global)
}

/// A `wl_surface` with no role.
pub fn bare_surface(client: &Client) -> WlSurface {
    client
        .state
        .compositor
        .as_ref()
        .expect("wl_compositor")
        .create_surface(client.qh(), IgnoreEvents)
}

/// A new toplevel, waited on (up to `timeout`) until configured: (window, its surface).
pub fn configured_window(
    client: &mut Client,
    title: &str,
    app_id: &str,
    timeout: std::time::Duration,
) -> (WindowId, WlSurface) {
    let w = client.create_window(title, app_id);
    client.wait_configured(w, timeout).unwrap();
    let surface = client.state.windows[w.0].surface.clone();
    (w, surface)
}
