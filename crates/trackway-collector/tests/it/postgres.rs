//! The test PostgreSQL harness itself: it starts, answers, stops and starts again.

use trackway_testkit::postgres::TestPostgres;

#[test]
fn the_harness_runs_a_server_that_can_be_stopped_and_started_again() {
    let mut server = TestPostgres::new().unwrap();
    assert_eq!(server.psql("SELECT 1 + 1").unwrap(), "2");
    server
        .psql("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
        .unwrap();
    server.stop().unwrap();
    assert!(server.psql("SELECT 1").is_err(), "answered while stopped");
    server.start().unwrap();
    assert_eq!(server.psql("SELECT n FROM kept").unwrap(), "7");
    let root = server.url();
    assert!(root.starts_with("postgres://postgres@127.0.0.1:"), "{root}");
}
