-- API keys: stored only as a SHA-256 hash; the prefix is shown in listings so
-- people can tell keys apart. Scope: admin, or one advertiser.
CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    prefix         text NOT NULL UNIQUE,
    hash           bytea NOT NULL UNIQUE,
    name           text NOT NULL DEFAULT '',
    scope          text NOT NULL CHECK (scope IN ('admin', 'advertiser')),
    advertiser_id  uuid REFERENCES advertisers (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    CHECK ((scope = 'admin') = (advertiser_id IS NULL))
);
