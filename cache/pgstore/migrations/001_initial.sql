-- popbridge shared state, schema version 1. Never edit this file once
-- released: add a new numbered file instead.
--
-- Keys, UIDLs and stamps are bytea: backends may put any bytes in them
-- (PostgreSQL text cannot hold NUL). Account names are text.

CREATE TABLE account (
    name text PRIMARY KEY
);

CREATE TABLE message (
    account text   NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    key     bytea  NOT NULL,
    size    bigint NOT NULL CHECK (size >= 0),
    uidl    bytea  NOT NULL,
    stamp   bytea  NOT NULL,
    PRIMARY KEY (account, key)
);

CREATE TABLE tombstone (
    account text   NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    key     bytea  NOT NULL,
    fence   bigint,            -- the lease that wrote it; NULL when unfenced
    PRIMARY KEY (account, key)
);

-- history_id holds a uint64 bit for bit in a bigint.
CREATE TABLE sync_state (
    account      text     PRIMARY KEY REFERENCES account (name) ON DELETE CASCADE,
    uid_validity bigint   NOT NULL,
    highest_uid  bigint   NOT NULL,
    history_id   bigint   NOT NULL,
    pop3_uidls   bytea[]
);

-- Named cursors, such as a Microsoft Graph delta link.
CREATE TABLE sync_cursor (
    account text   NOT NULL REFERENCES account (name) ON DELETE CASCADE,
    name    text   NOT NULL,
    value   text   NOT NULL,
    fence   bigint,
    PRIMARY KEY (account, name)
);

-- The maildrop lock: a lease with a fencing token. Times are the
-- database server's only.
CREATE SEQUENCE lease_fence;
CREATE TABLE maildrop_lease (
    account    text        PRIMARY KEY,
    owner      text        NOT NULL,
    fence      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);

-- OAuth2 tokens, sealed by the application in the token file format.
CREATE TABLE oauth_token (
    account    text        PRIMARY KEY,
    version    bigint      NOT NULL,
    token      bytea       NOT NULL,
    expires_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
