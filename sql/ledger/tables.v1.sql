-- The double-entry ledger: assets, customers, accounts, journals and entries.
-- Runs as exchange_owner. Constraint names follow <table>_<what>, so errors name the rule.
CREATE SCHEMA ledger;

CREATE TABLE ledger.asset (
    code text PRIMARY KEY,
    scale smallint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT asset_code_format CHECK (code ~ '^[A-Z][A-Z0-9]{1,15}$'),
    CONSTRAINT asset_scale_range CHECK (scale BETWEEN 0 AND 18)
);

-- A broker's client. Tenancy (which broker owns it) is added by a later migration.
CREATE TABLE ledger.customer (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_ref text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_external_ref_length CHECK (length(external_ref) BETWEEN 1 AND 200)
);

-- One row per (owner, asset, bucket). Customers have 'available' and 'held'; the exchange has
-- 'custody' (the outside world's side of deposits and withdrawals, the only bucket that may go
-- negative) and 'fee'. A system account is split by label so that no single row becomes a hot
-- lock shared by every instrument or tenant.
CREATE TABLE ledger.account (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint REFERENCES ledger.customer (id),
    asset text NOT NULL REFERENCES ledger.asset (code),
    bucket text NOT NULL,
    label text NOT NULL DEFAULT '',
    balance numeric NOT NULL DEFAULT 0,
    entry_count bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT account_bucket_valid CHECK (
        (customer_id IS NOT NULL AND bucket IN ('available', 'held') AND label = '')
        OR (customer_id IS NULL AND bucket IN ('custody', 'fee'))
    ),
    CONSTRAINT account_balance_non_negative CHECK (bucket = 'custody' OR balance >= 0),
    CONSTRAINT account_label_length CHECK (length(label) <= 100),
    CONSTRAINT account_owner_asset_bucket_key
        UNIQUE NULLS NOT DISTINCT (customer_id, asset, bucket, label),
    -- Target of the entry's (account_id, asset) foreign key: an entry's asset is its account's.
    CONSTRAINT account_id_asset_key UNIQUE (id, asset)
);

CREATE TABLE ledger.journal_kind (
    kind text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO ledger.journal_kind (kind, description) VALUES
    ('deposit', 'Funds arriving from outside: custody to the customer''s available balance.'),
    ('withdrawal', 'Funds leaving: the customer''s available balance to custody.'),
    ('transfer', 'Available funds moved between two customers.');

CREATE TABLE ledger.journal (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL REFERENCES ledger.journal_kind (kind),
    reference text,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT journal_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 300),
    CONSTRAINT journal_reference_length CHECK (length(reference) BETWEEN 1 AND 500)
);

-- account_seq (1, 2, 3, ... per account) and balance_after are set by a trigger under the
-- account's row lock, so they give each account's exact history order even when concurrent
-- transactions take entry ids in another order.
CREATE TABLE ledger.entry (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journal_id bigint NOT NULL REFERENCES ledger.journal (id),
    account_id bigint NOT NULL,
    account_seq bigint NOT NULL,
    asset text NOT NULL,
    amount numeric NOT NULL,
    balance_after numeric NOT NULL,
    CONSTRAINT entry_amount_non_zero CHECK (amount <> 0),
    -- PostgreSQL's numeric admits NaN and ±Infinity; money never is. Nor is an amount of 10^24
    -- units or more: no asset has that much, and 100,000-digit numbers would be a cheap DoS.
    CONSTRAINT entry_amount_finite CHECK (amount > '-Infinity' AND amount < 'Infinity'),
    CONSTRAINT entry_amount_magnitude CHECK (amount > -1e24 AND amount < 1e24),
    CONSTRAINT entry_account_seq_key UNIQUE (account_id, account_seq),
    CONSTRAINT entry_account_asset_fkey
        FOREIGN KEY (account_id, asset) REFERENCES ledger.account (id, asset)
);

CREATE INDEX entry_journal_id_idx ON ledger.entry (journal_id);
CREATE INDEX account_customer_id_idx ON ledger.account (customer_id);

COMMENT ON TABLE ledger.entry IS
    'Append-only double-entry legs. Never updated or deleted; every journal sums to zero per asset.';
COMMENT ON COLUMN ledger.account.balance IS
    'Cached sum of the account''s entries, maintained only by the entry trigger.';
