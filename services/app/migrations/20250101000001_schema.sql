-- The lab's schema: a product catalogue (read-heavy, cacheable) and bank
-- accounts (write-heavy, where stale reads and lost writes show).

CREATE TABLE products (
    id          bigint  PRIMARY KEY,
    name        text    NOT NULL,
    price_cents bigint  NOT NULL CHECK (price_cents >= 0)
);

-- Balances are integer cents: money is never a float. The CHECK keeps a
-- balance from ever going negative; overflow past bigint's range is refused
-- by PostgreSQL itself (SQLSTATE 22003).
CREATE TABLE accounts (
    id         bigint      PRIMARY KEY CHECK (id > 0),
    balance    bigint      NOT NULL CHECK (balance >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every acknowledged deposit, written in the same transaction as the
-- balance: an audit can compare the two.
CREATE TABLE deposits (
    id         bigserial   PRIMARY KEY,
    account_id bigint      NOT NULL REFERENCES accounts (id),
    amount     bigint      NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX deposits_account_id ON deposits (account_id);
