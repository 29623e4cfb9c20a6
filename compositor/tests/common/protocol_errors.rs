//! Protocol errors in the kernel tests: the offending client gets the right one, the others
//! carry on.

use std::time::Duration;

use fencegate::testing::{Snapshot, TestServer};
use fencegate_clients::Client;

/// How long a client waits for the protocol error it expects.
const ERROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Asserts the protocol error `client` got: (code, interface). Sends what is queued, then only
/// reads (no `wl_display.sync`: a write racing the server's close can fail with ECONNRESET
/// before the error, which is already in the socket, is read).
#[track_caller]
pub fn expect_error(client: &mut Client, code: u32, interface: &str) {
    let _ = client.flush();
    let result = client.dispatch_until(ERROR_TIMEOUT, "a protocol error", |_| false);
    let error = client
        .protocol_error()
        .unwrap_or_else(|| panic!("expected protocol error {code} on {interface}, got {result:?}"));
    assert_eq!(
        (error.code, error.object_interface.as_str()),
        (code, interface),
        "{}",
        error.message
    );
}

/// The bystander still gets answers, and so do the test's questions to the server.
#[track_caller]
pub fn others_carry_on(server: &TestServer, bystander: &mut Client) -> Snapshot {
    bystander
        .roundtrip()
        .expect("a bystander client is unaffected");
    server.snapshot().expect("the compositor still answers")
}
