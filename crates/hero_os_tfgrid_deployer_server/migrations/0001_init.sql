-- Deployer state. Nothing secret is stored here: secrets live in the secret store, keyed by user_id.

CREATE TABLE users (
    user_id               INTEGER PRIMARY KEY AUTOINCREMENT,
    forge_username        TEXT    NOT NULL UNIQUE,
    display_name          TEXT,
    email                 TEXT    NOT NULL,
    -- NULL until Forge confirmed the account.
    forge_user_id         INTEGER,
    forge_created         INTEGER NOT NULL DEFAULT 0,
    forge_token_set       INTEGER NOT NULL DEFAULT 0,
    forge_token_note      TEXT,
    initial_password_held INTEGER NOT NULL DEFAULT 0,
    -- 'pending' while create_user is in flight or failed part-way (a repeat call resumes it), then 'active'.
    setup_state           TEXT    NOT NULL DEFAULT 'pending',
    vm_status             TEXT    NOT NULL DEFAULT 'no_vm',
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE ssh_keys (
    user_id            INTEGER PRIMARY KEY,
    public_key         TEXT    NOT NULL,
    fingerprint        TEXT    NOT NULL,
    -- AEAD-sealed OpenSSH private key; the sealing key lives in the secret store.
    private_key_sealed BLOB    NOT NULL,
    created_at         INTEGER NOT NULL
);

-- VM records are kept after decommission, for audit.
CREATE TABLE vms (
    vm_id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id              INTEGER NOT NULL,
    forge_username       TEXT    NOT NULL,
    backend              TEXT    NOT NULL,
    name                 TEXT    NOT NULL,
    node_id              INTEGER,
    state                TEXT    NOT NULL,
    spec_json            TEXT    NOT NULL DEFAULT '{}',
    private_ip           TEXT,
    mycelium_ip          TEXT,
    url                  TEXT,
    host_key_fingerprint TEXT,
    deployer_version     TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    decommissioned_at    INTEGER
);
CREATE INDEX vms_by_user ON vms(user_id, state);

CREATE TABLE gateway_mappings (
    gateway_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL,
    vm_id       INTEGER,
    name        TEXT    NOT NULL,
    fqdn        TEXT,
    backend_url TEXT    NOT NULL,
    node_id     INTEGER,
    state       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);
CREATE INDEX gateways_by_user ON gateway_mappings(user_id, state);

-- Append-only audit log.
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    detail   TEXT
);
CREATE INDEX events_by_subject ON events(subject, event_id);
CREATE INDEX events_by_actor ON events(actor, event_id);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
