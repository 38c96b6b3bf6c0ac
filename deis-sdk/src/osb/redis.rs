//! [`RedisBackend`] (feature `redis`): service `redis` on a Redis 6+ server the broker
//! administers, with two plans.
//!
//! - `prefix`: an instance is a key prefix (`deis:<hash>:`); each binding is an ACL user
//!   allowed only keys and channels under it, without admin or dangerous commands.
//! - `db`: an instance is a logical database of its own (numbers handed out in the
//!   server's hash `deis:broker:dbs`); each binding is an ACL user whose URL selects it.
//!   Redis ACLs can't confine a user to one database, so this plan separates apps that
//!   use their URL, not apps that `SELECT` others on purpose: use `prefix` for that.
//!
//! Binding yields `uri` (`redis://user:password@host:port[/db]`), `username`,
//! `password`, `host`, `port` and, for `prefix`, `key_prefix`. Unbind kills the user's
//! connections and deletes it; deprovision deletes the instance's keys (or flushes its
//! database).

use async_trait::async_trait;
use deis_core::broker::{
    Backend, BindingRecord, BindingSpec, Bound, BrokerError, Catalog, Created, InstanceRecord, InstanceSpec, Object,
    Result, ServiceOffering, ServicePlan, hashed_name, random_password,
};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

/// The service id of `redis`.
pub const REDIS_SERVICE_ID: &str = "8c2e7b10-51d4-4f0e-9b6a-deis-redis";
/// The id of plan `prefix`.
pub const REDIS_PREFIX_PLAN_ID: &str = "8c2e7b10-51d4-4f0e-9b6a-deis-redis-prefix";
/// The id of plan `db`.
pub const REDIS_DB_PLAN_ID: &str = "8c2e7b10-51d4-4f0e-9b6a-deis-redis-db";
/// The hash of database numbers handed out (number -> instance id).
const DBS_KEY: &str = "deis:broker:dbs";

/// A Redis server administered by the broker. Run it inside a
/// [`ManagedBroker`](deis_core::broker::ManagedBroker).
#[derive(Debug, Clone)]
pub struct RedisBackend {
    client: redis::Client,
    host: String,
    port: u16,
    databases: u32,
}

fn backend_error(what: &str) -> impl Fn(redis::RedisError) -> BrokerError + '_ {
    move |e| BrokerError::Backend(format!("Redis: {what}: {e}"))
}

impl RedisBackend {
    /// A backend administering the server at `admin_url` (`redis://[user:pw@]host:port`,
    /// a user allowed `ACL`, `CLIENT KILL`, `SCAN`, `UNLINK`, `FLUSHDB`); `databases` is
    /// the server's number of logical databases (`databases` in redis.conf, 16 by
    /// default; database 0 stays the broker's).
    pub fn new(admin_url: &str, databases: u32) -> Result<Self> {
        let client = redis::Client::open(admin_url)
            .map_err(|e| BrokerError::BadRequest(format!("the admin URL is not a Redis URL: {e}")))?;
        let (host, port) = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            _ => return Err(BrokerError::BadRequest("the admin URL must name a TCP host (redis://host:port)".into())),
        };
        Ok(Self { client, host, port, databases: databases.max(2) })
    }

    async fn connection(&self) -> Result<MultiplexedConnection> {
        self.client.get_multiplexed_async_connection().await.map_err(backend_error("connecting as the administrator"))
    }

    /// A connection to database `db`.
    async fn on_db(&self, db: i64) -> Result<MultiplexedConnection> {
        let mut con = self.connection().await?;
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(&mut con)
            .await
            .map_err(backend_error("selecting the database"))?;
        Ok(con)
    }

    /// The database number given to `instance`, handing out a free one if needed.
    async fn database_of(&self, con: &mut MultiplexedConnection, instance: &str) -> Result<i64> {
        let taken: Vec<(i64, String)> =
            redis::cmd("HGETALL").arg(DBS_KEY).query_async(con).await.map_err(backend_error("reading databases"))?;
        if let Some((db, _)) = taken.iter().find(|(_, i)| i == instance) {
            return Ok(*db);
        }
        for db in 1..i64::from(self.databases) {
            let set: bool = redis::cmd("HSETNX")
                .arg(DBS_KEY)
                .arg(db)
                .arg(instance)
                .query_async(con)
                .await
                .map_err(backend_error("taking a database"))?;
            if set {
                return Ok(db);
            }
        }
        Err(BrokerError::Backend(format!(
            "all {} databases of the server are taken: destroy a `db` add-on or use plan `prefix`",
            self.databases - 1
        )))
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn catalog(&self) -> Catalog {
        let plan = |id: &str, name: &str, description: &str| ServicePlan {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            free: Some(true),
            ..ServicePlan::default()
        };
        Catalog {
            services: vec![ServiceOffering {
                name: "redis".into(),
                id: REDIS_SERVICE_ID.into(),
                description: "Redis on a shared server: an ACL user per app".into(),
                tags: vec!["redis".into(), "key-value".into()],
                bindable: true,
                instances_retrievable: Some(true),
                bindings_retrievable: Some(true),
                plans: vec![
                    plan(REDIS_PREFIX_PLAN_ID, "prefix", "Keys under a prefix of your own; users confined to it"),
                    plan(REDIS_DB_PLAN_ID, "db", "A logical database of your own"),
                ],
                ..ServiceOffering::default()
            }],
        }
    }

    async fn create_instance(&self, id: &str, spec: &InstanceSpec) -> Result<Created> {
        if spec.plan.plan_id == REDIS_DB_PLAN_ID {
            let mut con = self.connection().await?;
            let db = self.database_of(&mut con, id).await?;
            return Ok(Created { data: json!({ "db": db }), dashboard_url: None });
        }
        Ok(Created { data: json!({ "prefix": hashed_name("deis:", &[id]) + ":" }), dashboard_url: None })
    }

    async fn delete_instance(&self, instance: &InstanceRecord) -> Result<()> {
        if let Some(db) = instance.data["db"].as_i64() {
            let mut con = self.on_db(db).await?;
            redis::cmd("FLUSHDB").query_async::<()>(&mut con).await.map_err(backend_error("flushing the database"))?;
            let mut admin = self.connection().await?;
            redis::cmd("HDEL")
                .arg(DBS_KEY)
                .arg(db)
                .query_async::<()>(&mut admin)
                .await
                .map_err(backend_error("freeing the database"))?;
            return Ok(());
        }
        let Some(prefix) = instance.data["prefix"].as_str() else { return Ok(()) };
        let mut con = self.connection().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(backend_error("listing the instance's keys"))?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut con)
                    .await
                    .map_err(backend_error("deleting keys"))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn create_binding(&self, instance: &InstanceRecord, id: &str, _spec: &BindingSpec) -> Result<Bound> {
        let user = hashed_name("deis-", &[&instance.id, id]);
        let pw = random_password()?;
        let mut acl = redis::cmd("ACL");
        acl.arg("SETUSER").arg(&user).arg("reset").arg("on").arg(format!(">{pw}"));
        let (path, prefix) = match (instance.data["db"].as_i64(), instance.data["prefix"].as_str()) {
            (Some(db), _) => {
                acl.arg("~*").arg("&*");
                (format!("/{db}"), None)
            }
            (None, Some(prefix)) => {
                acl.arg(format!("~{prefix}*")).arg(format!("&{prefix}*"));
                (String::new(), Some(prefix.to_string()))
            }
            _ => return Err(BrokerError::Backend("the instance's record names neither db nor prefix".into())),
        };
        acl.arg("+@all").arg("-@admin").arg("-@dangerous");
        let mut con = self.connection().await?;
        acl.query_async::<()>(&mut con).await.map_err(backend_error("creating the ACL user"))?;
        let mut credentials = Object::new();
        credentials
            .insert("uri".into(), Value::String(format!("redis://{user}:{pw}@{}:{}{path}", self.host, self.port)));
        credentials.insert("username".into(), Value::String(user.clone()));
        credentials.insert("password".into(), Value::String(pw));
        credentials.insert("host".into(), Value::String(self.host.clone()));
        credentials.insert("port".into(), json!(self.port));
        if let Some(prefix) = prefix {
            credentials.insert("key_prefix".into(), Value::String(prefix));
        }
        Ok(Bound { credentials, data: json!({ "user": user }) })
    }

    async fn delete_binding(&self, instance: &InstanceRecord, binding: &BindingRecord) -> Result<()> {
        let user = hashed_name("deis-", &[&instance.id, &binding.id]);
        let mut con = self.connection().await?;
        // Off first, so nothing logs in between the kill and the delete.
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("off")
            .query_async::<()>(&mut con)
            .await
            .map_err(backend_error("disabling the user"))?;
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("USER")
            .arg(&user)
            .query_async::<i64>(&mut con)
            .await
            .map_err(backend_error("killing the user's connections"))?;
        redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .query_async::<i64>(&mut con)
            .await
            .map_err(backend_error("deleting the user"))?;
        Ok(())
    }
}
