//! [`PostgresBackend`] (feature `postgres`): service `postgresql`, plan `shared`, on a
//! PostgreSQL server the broker administers.
//!
//! - provision (asynchronous): an owner role with a random password and a database it
//!   owns; `CONNECT` is revoked from `PUBLIC`, so other tenants can't get in;
//! - bind: a login role of its own (random password) that is a member of the owner
//!   and acts as it (`SET ROLE` by default), so every binding sees the same tables;
//!   credentials `uri` (`postgres://role:password@host:port/database`), `username`,
//!   `password`, `host`, `port`, `database`;
//! - unbind: the role loses `LOGIN`, its sessions are terminated, what it owns goes to
//!   the owner, and it is dropped: the old credentials fail;
//! - deprovision: the database's sessions are terminated, it is dropped with its owner.
//!
//! Names derive from the instance and binding ids (a hash), so a repeated call after a
//! restart finds what an interrupted one made; every step is idempotent.

use std::str::FromStr;

use async_trait::async_trait;
use deis_core::broker::{
    Backend, BindingRecord, BindingSpec, Bound, BrokerError, Catalog, Created, InstanceRecord, InstanceSpec, Object,
    OperationKind, Result, ServiceOffering, ServicePlan, hashed_name, random_password,
};
use serde_json::{Value, json};
use tokio_postgres::{Client, Config, NoTls};

/// The service id of `postgresql`.
pub const POSTGRES_SERVICE_ID: &str = "3f4c1a52-9a8e-4d4f-8a44-deis-postgresql";
/// The id of plan `shared`.
pub const POSTGRES_SHARED_PLAN_ID: &str = "3f4c1a52-9a8e-4d4f-8a44-deis-postgresql-shared";

/// A PostgreSQL server administered by the broker. Run it inside a
/// [`ManagedBroker`](deis_core::broker::ManagedBroker).
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    admin: Config,
    host: String,
    port: u16,
}

fn backend_error(what: &str) -> impl Fn(tokio_postgres::Error) -> BrokerError + '_ {
    move |e| {
        BrokerError::Backend(format!(
            "PostgreSQL: {what}: {}",
            e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
        ))
    }
}

impl PostgresBackend {
    /// A backend administering the server at `admin_url`
    /// (`postgres://superuser:password@host:port/postgres`); the host and port of that
    /// URL are what bindings' credentials name.
    pub fn new(admin_url: &str) -> Result<Self> {
        let admin = Config::from_str(admin_url)
            .map_err(|e| BrokerError::BadRequest(format!("the admin URL is not a PostgreSQL URL: {e}")))?;
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => return Err(BrokerError::BadRequest("the admin URL must name a TCP host".into())),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        Ok(Self { admin, host, port })
    }

    /// Names `host` (and `port`) in bindings' credentials instead of the admin URL's.
    pub fn with_public_address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    /// A connection as the administrator to `database`.
    async fn connect(&self, database: &str) -> Result<Client> {
        let mut config = self.admin.clone();
        config.dbname(database);
        config.connect_timeout(std::time::Duration::from_secs(10));
        let (client, connection) =
            config.connect(NoTls).await.map_err(backend_error("connecting as the administrator"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL admin connection ended");
            }
        });
        Ok(client)
    }

    async fn admin(&self) -> Result<Client> {
        self.connect(self.admin.get_dbname().unwrap_or("postgres")).await
    }

    async fn exists(client: &Client, query: &str, name: &str) -> Result<bool> {
        Ok(!client.query(query, &[&name]).await.map_err(backend_error("looking up"))?.is_empty())
    }

    async fn role_exists(client: &Client, role: &str) -> Result<bool> {
        Self::exists(client, "SELECT 1 FROM pg_roles WHERE rolname = $1", role).await
    }

    /// Creates `role` with `password`, or sets the password of the existing one.
    async fn ensure_role(client: &Client, role: &str, password: &str) -> Result<()> {
        let verb = if Self::role_exists(client, role).await? { "ALTER" } else { "CREATE" };
        client
            .batch_execute(&format!("{verb} ROLE {role} LOGIN PASSWORD '{password}'"))
            .await
            .map_err(backend_error("creating a role"))
    }

    async fn terminate(client: &Client, column: &str, value: &str) -> Result<()> {
        let query = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {column} = $1 AND pid <> pg_backend_pid()"
        );
        client.execute(&query, &[&value]).await.map_err(backend_error("terminating sessions"))?;
        Ok(())
    }

    fn field<'a>(data: &'a Value, key: &str) -> Result<&'a str> {
        data[key].as_str().ok_or_else(|| BrokerError::Backend(format!("the instance's record lacks {key}")))
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn catalog(&self) -> Catalog {
        Catalog {
            services: vec![ServiceOffering {
                name: "postgresql".into(),
                id: POSTGRES_SERVICE_ID.into(),
                description: "PostgreSQL databases on a shared server".into(),
                tags: vec!["postgresql".into(), "relational".into()],
                bindable: true,
                instances_retrievable: Some(true),
                bindings_retrievable: Some(true),
                plans: vec![ServicePlan {
                    id: POSTGRES_SHARED_PLAN_ID.into(),
                    name: "shared".into(),
                    description: "A database of your own on a shared server; a login role per app".into(),
                    free: Some(true),
                    maximum_polling_duration: Some(600),
                    ..ServicePlan::default()
                }],
                ..ServiceOffering::default()
            }],
        }
    }

    fn asynchronous(&self, _plan_id: &str, kind: OperationKind) -> bool {
        kind == OperationKind::Provision
    }

    async fn create_instance(&self, id: &str, _spec: &InstanceSpec) -> Result<Created> {
        let (database, owner) = (hashed_name("deis_", &[id]), hashed_name("deis_owner_", &[id]));
        let owner_password = random_password()?;
        let client = self.admin().await?;
        Self::ensure_role(&client, &owner, &owner_password).await?;
        if !Self::exists(&client, "SELECT 1 FROM pg_database WHERE datname = $1", &database).await? {
            client
                .batch_execute(&format!("CREATE DATABASE {database} OWNER {owner}"))
                .await
                .map_err(backend_error("creating the database"))?;
        }
        client
            .batch_execute(&format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
            .await
            .map_err(backend_error("restricting the database"))?;
        Ok(Created {
            data: json!({ "database": database, "owner": owner, "owner_password": owner_password }),
            dashboard_url: None,
        })
    }

    async fn delete_instance(&self, instance: &InstanceRecord) -> Result<()> {
        let (database, owner) = (Self::field(&instance.data, "database")?, Self::field(&instance.data, "owner")?);
        let client = self.admin().await?;
        if Self::exists(&client, "SELECT 1 FROM pg_database WHERE datname = $1", database).await? {
            client
                .batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false"))
                .await
                .map_err(backend_error("closing the database"))?;
            Self::terminate(&client, "datname", database).await?;
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
                .await
                .map_err(backend_error("dropping the database"))?;
        }
        client.batch_execute(&format!("DROP ROLE IF EXISTS {owner}")).await.map_err(backend_error("dropping the owner"))
    }

    async fn create_binding(&self, instance: &InstanceRecord, id: &str, _spec: &BindingSpec) -> Result<Bound> {
        let (database, owner) = (Self::field(&instance.data, "database")?, Self::field(&instance.data, "owner")?);
        let role = hashed_name("deis_app_", &[&instance.id, id]);
        let pw = random_password()?;
        let client = self.admin().await?;
        Self::ensure_role(&client, &role, &pw).await?;
        // Sessions act as the owner, so what one app creates every binding can use.
        client
            .batch_execute(&format!(
                "GRANT {owner} TO {role}; ALTER ROLE {role} SET role = '{owner}'; GRANT CONNECT ON DATABASE {database} TO {role}"
            ))
            .await
            .map_err(backend_error("granting the role"))?;
        let uri = format!("postgres://{role}:{pw}@{}:{}/{database}", self.host, self.port);
        let mut credentials = Object::new();
        credentials.insert("uri".into(), Value::String(uri));
        credentials.insert("username".into(), Value::String(role.clone()));
        credentials.insert("password".into(), Value::String(pw));
        credentials.insert("host".into(), Value::String(self.host.clone()));
        credentials.insert("port".into(), json!(self.port));
        credentials.insert("database".into(), Value::String(database.into()));
        Ok(Bound { credentials, data: json!({ "role": role }) })
    }

    async fn delete_binding(&self, instance: &InstanceRecord, binding: &BindingRecord) -> Result<()> {
        let (database, owner) = (Self::field(&instance.data, "database")?, Self::field(&instance.data, "owner")?);
        let role = hashed_name("deis_app_", &[&instance.id, &binding.id]);
        let client = self.admin().await?;
        if !Self::role_exists(&client, &role).await? {
            return Ok(());
        }
        client
            .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
            .await
            .map_err(backend_error("disabling the role"))?;
        Self::terminate(&client, "usename", &role).await?;
        // What the role owns in the database goes to the owner before it is dropped.
        let in_database = self.connect(database).await?;
        in_database
            .batch_execute(&format!("REASSIGN OWNED BY {role} TO {owner}; DROP OWNED BY {role}"))
            .await
            .map_err(backend_error("handing over the role's objects"))?;
        drop(in_database);
        client.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.map_err(backend_error("dropping the role"))
    }
}
