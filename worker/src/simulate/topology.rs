//! Service topologies for the simulator: services spread over providers, routes with their
//! latency, error rate, payload sizes and downstream calls, entry gateways and user flows.

/// One service instance (a service in one provider).
#[derive(Clone, Debug)]
pub struct ServiceDef {
    pub name: &'static str,
    pub provider: &'static str,
    pub region: &'static str,
    /// Entry services receive user sessions, with this share of them.
    pub entry_share: f64,
    /// Appears only after this fraction of the run (a new service mid-stream).
    pub appears_at: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct RouteDef {
    pub service: usize,
    pub method: &'static str,
    /// Path with `{id}` where a random identifier goes.
    pub path: &'static str,
    pub self_ms: f64,
    pub error_rate: f64,
    pub request_bytes: f64,
    pub response_bytes: f64,
    /// Downstream routes, called in order.
    pub calls: Vec<usize>,
}

/// A user flow: entry steps by name (`METHOD path`), resolved on whichever entry service the
/// user's session goes to.
#[derive(Clone, Debug)]
pub struct FlowDef {
    pub name: &'static str,
    pub weight: f64,
    pub steps: Vec<&'static str>,
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub name: &'static str,
    pub services: Vec<ServiceDef>,
    pub routes: Vec<RouteDef>,
    pub flows: Vec<FlowDef>,
}

pub const TOPOLOGIES: [&str; 3] = ["bank", "retail", "saas"];

/// An entry route: method, path, own latency (ms), request and response bytes, downstream calls.
type EntryRoute = (&'static str, &'static str, f64, f64, f64, Vec<usize>);

struct Builder {
    t: Topology,
}

impl Builder {
    fn new(name: &'static str) -> Self {
        Builder {
            t: Topology {
                name,
                services: vec![],
                routes: vec![],
                flows: vec![],
            },
        }
    }
    fn svc(&mut self, name: &'static str, provider: &'static str, region: &'static str) -> usize {
        self.t.services.push(ServiceDef {
            name,
            provider,
            region,
            entry_share: 0.0,
            appears_at: None,
        });
        self.t.services.len() - 1
    }
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        service: usize,
        method: &'static str,
        path: &'static str,
        self_ms: f64,
        error_rate: f64,
        req: f64,
        resp: f64,
        calls: &[usize],
    ) -> usize {
        self.t.routes.push(RouteDef {
            service,
            method,
            path,
            self_ms,
            error_rate,
            request_bytes: req,
            response_bytes: resp,
            calls: calls.to_vec(),
        });
        self.t.routes.len() - 1
    }
    /// The same entry routes on each gateway instance.
    fn entry_routes(&mut self, gateways: &[usize], defs: &[EntryRoute]) {
        for &g in gateways {
            for (m, p, ms, req, resp, calls) in defs {
                self.route(g, m, p, *ms, 0.002, *req, *resp, calls);
            }
        }
    }
    fn flow(&mut self, name: &'static str, weight: f64, steps: &[&'static str]) {
        self.t.flows.push(FlowDef {
            name,
            weight,
            steps: steps.to_vec(),
        });
    }
}

/// A topology by name.
pub fn topology(name: &str) -> Option<Topology> {
    match name {
        "bank" => Some(bank()),
        "retail" => Some(retail()),
        "saas" => Some(saas()),
        _ => None,
    }
}

fn bank() -> Topology {
    let mut b = Builder::new("bank");
    let gw_on = b.svc("gateway", "onprem", "dc-paris");
    let gw_aws = b.svc("gateway", "aws", "eu-west-1");
    b.t.services[gw_on].entry_share = 0.65;
    b.t.services[gw_aws].entry_share = 0.35;
    let auth = b.svc("auth", "onprem", "dc-paris");
    let accounts = b.svc("accounts", "onprem", "dc-paris");
    let ledger = b.svc("ledger", "onprem", "dc-lyon");
    let payments = b.svc("payments", "aws", "eu-west-1");
    let fraud = b.svc("fraud", "gcp", "europe-west1");
    let notify = b.svc("notifications", "azure", "westeurope");
    let reco = b.svc("offers", "gcp", "europe-west1");
    b.t.services[reco].appears_at = Some(0.45);

    let token = b.route(auth, "POST", "/auth/token", 25.0, 0.002, 300.0, 900.0, &[]);
    let revoke = b.route(auth, "DELETE", "/auth/token/{id}", 8.0, 0.001, 100.0, 50.0, &[]);
    let ledger_bal = b.route(ledger, "GET", "/ledger/{id}/balance", 18.0, 0.002, 80.0, 400.0, &[]);
    let ledger_entries = b.route(ledger, "GET", "/ledger/{id}/entries", 40.0, 0.002, 80.0, 12_000.0, &[]);
    let ledger_post = b.route(ledger, "POST", "/ledger/entries", 30.0, 0.002, 700.0, 300.0, &[]);
    let acc_list = b.route(accounts, "GET", "/accounts/{id}", 20.0, 0.002, 80.0, 2500.0, &[]);
    let acc_bal = b.route(accounts, "GET", "/accounts/{id}/balance", 10.0, 0.002, 80.0, 450.0, &[ledger_bal]);
    let fraud_score = b.route(fraud, "POST", "/fraud/score", 35.0, 0.002, 1200.0, 200.0, &[]);
    let notify_send = b.route(notify, "POST", "/notify", 15.0, 0.003, 600.0, 100.0, &[]);
    let pay = b.route(
        payments,
        "POST",
        "/payments",
        30.0,
        0.002,
        900.0,
        600.0,
        &[fraud_score, ledger_post],
    );
    let confirm = b.route(
        payments,
        "POST",
        "/payments/{id}/confirm",
        20.0,
        0.002,
        200.0,
        400.0,
        &[ledger_post, notify_send],
    );
    let offers = b.route(reco, "GET", "/offers/{id}", 22.0, 0.002, 80.0, 1800.0, &[]);
    b.entry_routes(
        &[gw_on, gw_aws],
        &[
            ("POST", "/api/v1/login", 5.0, 400.0, 1000.0, vec![token]),
            ("GET", "/api/v1/accounts", 4.0, 100.0, 2600.0, vec![acc_list, offers]),
            ("GET", "/api/v1/accounts/{id}/balance", 3.0, 100.0, 500.0, vec![acc_bal]),
            (
                "GET",
                "/api/v1/accounts/{id}/transactions",
                4.0,
                100.0,
                12_500.0,
                vec![ledger_entries],
            ),
            ("POST", "/api/v1/transfers", 6.0, 1000.0, 700.0, vec![pay]),
            ("POST", "/api/v1/transfers/{id}/confirm", 4.0, 250.0, 450.0, vec![confirm]),
            ("POST", "/api/v1/logout", 2.0, 100.0, 60.0, vec![revoke]),
        ],
    );
    b.flow(
        "balance",
        0.4,
        &[
            "POST /api/v1/login",
            "GET /api/v1/accounts",
            "GET /api/v1/accounts/{id}/balance",
            "POST /api/v1/logout",
        ],
    );
    b.flow(
        "transfer",
        0.35,
        &[
            "POST /api/v1/login",
            "GET /api/v1/accounts",
            "GET /api/v1/accounts/{id}/balance",
            "POST /api/v1/transfers",
            "POST /api/v1/transfers/{id}/confirm",
            "POST /api/v1/logout",
        ],
    );
    b.flow(
        "history",
        0.25,
        &[
            "POST /api/v1/login",
            "GET /api/v1/accounts",
            "GET /api/v1/accounts/{id}/transactions",
            "GET /api/v1/accounts/{id}/transactions",
        ],
    );
    b.t
}

fn retail() -> Topology {
    let mut b = Builder::new("retail");
    let edge_aws = b.svc("storefront", "aws", "us-east-1");
    let edge_gcp = b.svc("storefront", "gcp", "us-central1");
    b.t.services[edge_aws].entry_share = 0.7;
    b.t.services[edge_gcp].entry_share = 0.3;
    let catalog = b.svc("catalog", "aws", "us-east-1");
    let search = b.svc("search", "gcp", "us-central1");
    let cart = b.svc("cart", "azure", "eastus");
    let pricing = b.svc("pricing", "gcp", "us-central1");
    let inventory = b.svc("inventory", "onprem", "dc-chicago");
    let orders = b.svc("orders", "onprem", "dc-chicago");
    let psp = b.svc("psp", "azure", "eastus");
    let reviews = b.svc("reviews", "aws", "us-east-1");
    b.t.services[reviews].appears_at = Some(0.5);

    let price = b.route(pricing, "GET", "/prices/{id}", 12.0, 0.002, 60.0, 300.0, &[]);
    let stock = b.route(inventory, "GET", "/stock/{id}", 15.0, 0.002, 60.0, 200.0, &[]);
    let reserve = b.route(inventory, "POST", "/reservations", 25.0, 0.003, 500.0, 300.0, &[]);
    let product = b.route(catalog, "GET", "/products/{id}", 18.0, 0.002, 60.0, 6000.0, &[price, stock]);
    let query = b.route(search, "GET", "/search", 45.0, 0.002, 150.0, 9000.0, &[price]);
    let cart_add = b.route(cart, "POST", "/carts/{id}/items", 12.0, 0.002, 300.0, 800.0, &[stock]);
    let cart_get = b.route(cart, "GET", "/carts/{id}", 8.0, 0.002, 60.0, 1500.0, &[price]);
    let charge = b.route(psp, "POST", "/charges", 60.0, 0.004, 800.0, 400.0, &[]);
    let order = b.route(orders, "POST", "/orders", 30.0, 0.002, 1500.0, 700.0, &[reserve, charge]);
    let rev = b.route(reviews, "GET", "/reviews/{id}", 20.0, 0.002, 60.0, 3000.0, &[]);
    b.entry_routes(
        &[edge_aws, edge_gcp],
        &[
            ("GET", "/", 6.0, 200.0, 25_000.0, vec![]),
            ("GET", "/search", 4.0, 200.0, 9500.0, vec![query]),
            ("GET", "/p/{id}", 4.0, 200.0, 7000.0, vec![product, rev]),
            ("POST", "/cart/items", 4.0, 400.0, 900.0, vec![cart_add]),
            ("GET", "/cart", 3.0, 200.0, 1600.0, vec![cart_get]),
            ("POST", "/checkout", 6.0, 1600.0, 800.0, vec![order]),
        ],
    );
    b.flow("browse", 0.5, &["GET /", "GET /search", "GET /p/{id}", "GET /p/{id}"]);
    b.flow(
        "buy",
        0.3,
        &[
            "GET /",
            "GET /search",
            "GET /p/{id}",
            "POST /cart/items",
            "GET /cart",
            "POST /checkout",
        ],
    );
    b.flow("return", 0.2, &["GET /cart", "POST /cart/items", "GET /cart", "POST /checkout"]);
    b.t
}

fn saas() -> Topology {
    let mut b = Builder::new("saas");
    let api_gcp = b.svc("api", "gcp", "europe-west4");
    let api_az = b.svc("api", "azure", "northeurope");
    b.t.services[api_gcp].entry_share = 0.55;
    b.t.services[api_az].entry_share = 0.45;
    let tenants = b.svc("tenants", "onprem", "dc-frankfurt");
    let users = b.svc("users", "gcp", "europe-west4");
    let billing = b.svc("billing", "aws", "eu-central-1");
    let storage = b.svc("storage", "azure", "northeurope");
    let reports = b.svc("reports", "aws", "eu-central-1");
    let audit = b.svc("audit", "onprem", "dc-frankfurt");
    let search = b.svc("indexer", "gcp", "europe-west4");
    b.t.services[search].appears_at = Some(0.4);

    let tenant = b.route(tenants, "GET", "/tenants/{id}", 10.0, 0.002, 60.0, 900.0, &[]);
    let audit_log = b.route(audit, "POST", "/audit/events", 8.0, 0.002, 500.0, 60.0, &[]);
    let session = b.route(users, "POST", "/sessions", 30.0, 0.002, 300.0, 700.0, &[tenant]);
    let profile = b.route(users, "GET", "/users/{id}", 12.0, 0.002, 60.0, 1200.0, &[]);
    let files = b.route(storage, "GET", "/files", 35.0, 0.003, 80.0, 15_000.0, &[tenant]);
    let upload = b.route(storage, "PUT", "/files/{id}", 80.0, 0.004, 200_000.0, 300.0, &[audit_log]);
    let usage = b.route(billing, "POST", "/usage", 15.0, 0.002, 300.0, 100.0, &[]);
    let invoice = b.route(billing, "GET", "/invoices/{id}", 25.0, 0.002, 60.0, 4000.0, &[]);
    let report = b.route(reports, "POST", "/reports", 120.0, 0.003, 400.0, 30_000.0, &[files, usage]);
    let index = b.route(search, "POST", "/index", 20.0, 0.002, 2000.0, 100.0, &[]);
    b.entry_routes(
        &[api_gcp, api_az],
        &[
            ("POST", "/v2/login", 4.0, 300.0, 800.0, vec![session, audit_log]),
            ("GET", "/v2/me", 3.0, 60.0, 1300.0, vec![profile]),
            ("GET", "/v2/files", 4.0, 80.0, 15_500.0, vec![files]),
            ("PUT", "/v2/files/{id}", 6.0, 200_000.0, 400.0, vec![upload, usage, index]),
            ("POST", "/v2/reports", 5.0, 400.0, 30_500.0, vec![report]),
            ("GET", "/v2/invoices/{id}", 3.0, 60.0, 4100.0, vec![invoice]),
        ],
    );
    b.flow(
        "work",
        0.5,
        &[
            "POST /v2/login",
            "GET /v2/me",
            "GET /v2/files",
            "PUT /v2/files/{id}",
            "GET /v2/files",
        ],
    );
    b.flow(
        "report",
        0.3,
        &["POST /v2/login", "GET /v2/files", "POST /v2/reports", "GET /v2/me"],
    );
    b.flow("billing", 0.2, &["POST /v2/login", "GET /v2/me", "GET /v2/invoices/{id}"]);
    b.t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topology_is_consistent() {
        for name in TOPOLOGIES {
            let t = topology(name).unwrap();
            let entries: Vec<usize> = (0..t.services.len()).filter(|&i| t.services[i].entry_share > 0.0).collect();
            assert!(entries.len() >= 2, "{name}");
            let share: f64 = entries.iter().map(|&i| t.services[i].entry_share).sum();
            assert!((share - 1.0).abs() < 1e-9);
            let providers: std::collections::BTreeSet<_> = t.services.iter().map(|s| s.provider).collect();
            assert_eq!(providers.len(), 4, "{name} spans onprem, aws, azure, gcp");
            for f in &t.flows {
                for step in &f.steps {
                    for &g in &entries {
                        assert!(
                            t.routes
                                .iter()
                                .any(|r| r.service == g && format!("{} {}", r.method, r.path) == *step),
                            "{name}: flow step {step} missing on entry {g}"
                        );
                    }
                }
            }
            for r in &t.routes {
                assert!(r.calls.iter().all(|&c| c < t.routes.len()));
            }
        }
    }
}
