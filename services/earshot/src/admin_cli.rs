//! `earshot admin …`: bootstrap from a shell. The last line of stdout is the
//! new id or key alone, so scripts can capture it with `tail -n1`.

use clap::{Args, Subcommand};
use earshot_reporting::auth::Scope;
use earshot_reporting::catalog::{self, CatalogError, NewCampaign, NewCreative};
use sqlx::PgPool;
use time::Date;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Advertisers.
    Advertiser {
        #[command(subcommand)]
        command: AdvertiserCommand,
    },
    /// Campaigns.
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// Creatives.
    Creative {
        #[command(subcommand)]
        command: CreativeCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
pub enum AdvertiserCommand {
    /// Create an advertiser; prints its id.
    Create { name: String },
}

#[derive(Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign; prints its id (the id used in pixel URLs).
    Create {
        /// The advertiser's id.
        #[arg(long)]
        advertiser: Uuid,
        /// The campaign id used in pixel URLs.
        campaign_id: String,
        #[arg(long)]
        name: Option<String>,
        /// Impression goal.
        #[arg(long)]
        goal: Option<i64>,
        /// First day of the flight, YYYY-MM-DD (UTC).
        #[arg(long, value_parser = parse_date)]
        start: Option<Date>,
        /// Last day of the flight, YYYY-MM-DD (UTC), included.
        #[arg(long, value_parser = parse_date)]
        end: Option<Date>,
    },
}

#[derive(Subcommand)]
pub enum CreativeCommand {
    /// Create or update a creative; prints its id.
    Create {
        #[arg(long)]
        campaign: String,
        creative_id: String,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct KeyScope {
    /// A key that sees this advertiser's campaigns only.
    #[arg(long)]
    advertiser: Option<Uuid>,
    /// A key with admin scope.
    #[arg(long)]
    admin: bool,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints it (shown once, stored only as a hash).
    Create {
        #[command(flatten)]
        scope: KeyScope,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke a key by id or prefix; prints its id.
    Revoke { id_or_prefix: String },
}

pub(crate) fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn fail(e: CatalogError) -> anyhow::Error {
    match e {
        CatalogError::Invalid { param, detail } => anyhow::anyhow!("{param}: {detail}"),
        e => anyhow::anyhow!("{e}"),
    }
}

pub async fn run(pool: &PgPool, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Advertiser {
            command: AdvertiserCommand::Create { name },
        } => {
            let a = catalog::create_advertiser(pool, &name)
                .await
                .map_err(fail)?;
            println!("created advertiser {:?}", a.name);
            println!("{}", a.id);
        }
        AdminCommand::Campaign {
            command:
                CampaignCommand::Create {
                    advertiser,
                    campaign_id,
                    name,
                    goal,
                    start,
                    end,
                },
        } => {
            let c = catalog::create_campaign(
                pool,
                &NewCampaign {
                    id: campaign_id,
                    advertiser_id: advertiser,
                    name,
                    flight_start: start,
                    flight_end: end,
                    impression_goal: goal,
                },
            )
            .await
            .map_err(fail)?;
            println!(
                "created campaign {:?} for advertiser {}",
                c.name, c.advertiser_id
            );
            println!("{}", c.id);
        }
        AdminCommand::Creative {
            command:
                CreativeCommand::Create {
                    campaign,
                    creative_id,
                    name,
                },
        } => {
            let c = catalog::put_creative(
                pool,
                &campaign,
                &NewCreative {
                    id: creative_id,
                    name,
                    duration_ms: None,
                },
            )
            .await
            .map_err(fail)?;
            println!("creative {:?} of campaign {}", c.name, c.campaign_id);
            println!("{}", c.id);
        }
        AdminCommand::Key {
            command: KeyCommand::Create { scope, name },
        } => {
            let scope = match (scope.admin, scope.advertiser) {
                (true, _) => Scope::Admin,
                (false, Some(a)) => Scope::Advertiser(a),
                (false, None) => anyhow::bail!("give --admin or --advertiser ID"),
            };
            let k = catalog::create_key(pool, scope, &name)
                .await
                .map_err(fail)?;
            println!(
                "created {} key {} (prefix {}); it is shown only now",
                k.info.scope, k.info.id, k.info.prefix
            );
            println!("{}", k.key);
        }
        AdminCommand::Key {
            command: KeyCommand::Revoke { id_or_prefix },
        } => {
            let k = catalog::revoke_key(pool, &id_or_prefix)
                .await
                .map_err(fail)?;
            println!("revoked key {} (prefix {})", k.id, k.prefix);
            println!("{}", k.id);
        }
    }
    Ok(())
}
