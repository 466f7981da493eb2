-- Advertisers, their campaigns and creatives: the catalog reports are scoped by.
-- Campaign ids are the ids used in pixel URLs (`c=`), so they follow the same
-- rule as earshot_domain::CampaignId.

CREATE TABLE advertisers (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    advertiser_id    uuid NOT NULL REFERENCES advertisers (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The flight: first day included, last day included (UTC dates).
    flight_start     date,
    flight_end       date,
    impression_goal  bigint CHECK (impression_goal >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (flight_end IS NULL OR flight_start IS NULL OR flight_end >= flight_start)
);
CREATE INDEX campaigns_advertiser_idx ON campaigns (advertiser_id);

CREATE TABLE creatives (
    campaign_id  text NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    id           text NOT NULL CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    duration_ms  integer CHECK (duration_ms > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, id)
);
