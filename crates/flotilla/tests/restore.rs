//! A pg_dump of a PostgreSQL 15 database loads through psql, unmodified and stopping at
//! the first error, into the real binary: the way a user moves an application over.

mod support;

use support::Server;

const DUMP: &str = include_str!("data/pg_dump_15.sql");

#[test]
fn a_pg_dump_of_postgres_loads_with_its_data_sequences_identities_checks_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // psql_ok runs with ON_ERROR_STOP: every statement of the dump must succeed.
    server.psql_ok(DUMP);

    // The rows, with escapes, NULLs and numerics as they were.
    assert_eq!(
        server.psql_ok(
            "SELECT id, name, coalesce(email, '<null>'), balance FROM customers ORDER BY id;
             SELECT id, note IS NULL, amount FROM orders ORDER BY id;
             SELECT note = E'tab\\tand\\nnewline', (SELECT note FROM orders WHERE id = 3) FROM orders WHERE id = 1;
             SELECT * FROM big_orders ORDER BY id;
             SELECT count(*) FROM tags;"
        ),
        "1|ann|a@x|0.00\n2|bob|b@x|0.00\n3|cé 'quote'|<null>|0.00\n\
         1|f|150.00\n2|t|20.00\n3|f|300.50\n\
         t|\\back\n\
         1|ann|150.00\n3|ann|300.50\n\
         2\n"
    );

    // The serial column's sequence, now owned by it, and the identity column's continue
    // after the restored rows (setval), and the ALWAYS identity took its values from COPY.
    assert_eq!(
        server.psql_ok(
            "INSERT INTO customers (name) VALUES ('dee') RETURNING id;
             INSERT INTO orders (customer_id, amount) VALUES (4, 5) RETURNING id;
             INSERT INTO events (kind) VALUES ('again') RETURNING id;
             SELECT pg_get_serial_sequence('customers', 'id'), pg_get_serial_sequence('events', 'id');"
        ),
        "4\n4\n3\npublic.customers_id_seq|public.events_id_seq\n"
    );
    let err = server.psql_err("INSERT INTO events (id, kind) VALUES (9, 'x');");
    assert!(err.contains("cannot insert a non-DEFAULT value"), "{err}");

    // The CHECK constraints hold, by the names PostgreSQL gave them, and change nothing.
    for (sql, constraint) in [
        (
            "INSERT INTO customers (name, balance) VALUES ('neg', -1);",
            "customers_balance_check",
        ),
        (
            "UPDATE customers SET balance = -5 WHERE id = 1;",
            "customers_balance_check",
        ),
        ("INSERT INTO ck VALUES (1, 2, 5);", "ck_c_check"),
        ("INSERT INTO ck VALUES (1, 2, 200);", "ck_c_check1"),
        (
            "INSERT INTO events (kind) VALUES ('');",
            "events_kind_check",
        ),
    ] {
        let err = server.psql_err(sql);
        assert!(
            err.contains(&format!("violates check constraint \"{constraint}\"")),
            "{sql}: {err}"
        );
    }
    assert_eq!(
        server.psql_ok("SELECT sum(balance) FROM customers; SELECT count(*) FROM ck;"),
        "0.00\n1\n"
    );

    // The foreign key, added after the rows as pg_dump orders it, holds.
    let err = server.psql_err("INSERT INTO orders (customer_id, amount) VALUES (99, 1);");
    assert!(
        err.contains("violates foreign key constraint \"orders_customer_id_fkey\""),
        "{err}"
    );
    let err = server.psql_err("DELETE FROM customers WHERE id = 1;");
    assert!(
        err.contains("is still referenced from table \"orders\""),
        "{err}"
    );

    // The sequence a column owns goes with it; the table goes once its references do.
    let err = server.psql_err("DROP SEQUENCE customers_id_seq;");
    assert!(err.contains("requires it"), "{err}");
    let err = server.psql_err("DROP TABLE customers;");
    assert!(err.contains("orders_customer_id_fkey"), "{err}");
    server.psql_ok("ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey;");
    server.psql_ok("DROP TABLE customers;");
    assert_eq!(
        server.psql_ok("SELECT count(*) FROM pg_class WHERE relname = 'customers_id_seq';"),
        "0\n"
    );
}
