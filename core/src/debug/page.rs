//! The admin page (`/`), its data (`/summary.json`) and the dependency graph
//! as SVG: plain HTML, inline CSS and script, no external assets.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::{json, Value};

use crate::stats::{self, HistogramSnapshot};

/// Seconds over which the page's rates and p99 are computed.
const WINDOW_SECONDS: f64 = 10.0;

struct Row {
    key: String,
    total: u64,
    errors: u64,
    rejections: u64,
    latency: HistogramSnapshot,
}

/// Totals of every method and client at one moment.
pub(super) struct Sample {
    at: Instant,
    methods: Vec<Row>,
    clients: Vec<Row>,
}

impl Sample {
    pub(super) fn take() -> Sample {
        let methods = stats::method_summaries()
            .into_iter()
            .map(|m| Row { key: format!("{}/{}", m.service, m.method), total: m.requests, errors: m.errors, rejections: 0, latency: m.latency })
            .collect();
        let clients = stats::client_totals()
            .into_iter()
            .map(|c| Row { key: c.name, total: c.requests, errors: c.errors, rejections: c.rejections.iter().sum(), latency: c.latency })
            .collect();
        Sample { at: Instant::now(), methods, clients }
    }
}

/// The last minute of samples, one per second.
#[derive(Default)]
pub(super) struct Window {
    samples: VecDeque<Sample>,
}

impl Window {
    pub(super) fn push(&mut self, s: Sample) {
        if self.samples.len() >= 61 {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// Figures now, with rates and p99 over the last [`WINDOW_SECONDS`].
    pub(super) fn summary(&self, ctx: Option<&super::DebugContext>) -> Value {
        let now = Sample::take();
        let base = self
            .samples
            .iter()
            .find(|s| now.at.duration_since(s.at).as_secs_f64() <= WINDOW_SECONDS + 0.5)
            .or(self.samples.front());
        let dt = base.map_or(0.0, |b| now.at.duration_since(b.at).as_secs_f64());
        let rows = |cur: &[Row], old: Option<&[Row]>, kind: &str| -> Vec<Value> {
            cur.iter()
                .map(|r| {
                    let o = old.and_then(|o| o.iter().find(|x| x.key == r.key));
                    let (dt_total, dt_err) = match o {
                        Some(o) => (r.total.saturating_sub(o.total), r.errors.saturating_sub(o.errors)),
                        None => (r.total, r.errors),
                    };
                    let window = match o {
                        Some(o) => r.latency.minus(&o.latency),
                        None => r.latency.clone(),
                    };
                    let rate = (dt > 0.05).then(|| dt_total as f64 / dt);
                    let err_rate = (dt > 0.05).then(|| dt_err as f64 / dt);
                    let p99 = window.quantile(0.99).or_else(|| r.latency.quantile(0.99)).map(|s| s * 1e3);
                    let (a, b) = r.key.split_once('/').unwrap_or((&r.key, ""));
                    let mut v = json!({
                        "total": r.total, "errors": r.errors, "rate": rate, "error_rate": err_rate, "p99_ms": p99,
                    });
                    if kind == "method" {
                        v["service"] = json!(a);
                        v["method"] = json!(b);
                    } else {
                        v["client"] = json!(r.key);
                        v["rejections"] = json!(r.rejections);
                    }
                    v
                })
                .collect()
        };
        let methods = rows(&now.methods, base.map(|b| &b.methods[..]), "method");
        let clients = rows(&now.clients, base.map(|b| &b.clients[..]), "client");
        let mut inflight = serde_json::Map::new();
        for m in stats::method_summaries() {
            inflight.insert(format!("{}/{}", m.service, m.method), json!([m.in_flight, m.queue_size]));
        }
        let mut methods = methods;
        for m in methods.iter_mut() {
            let key = format!("{}/{}", m["service"].as_str().unwrap_or(""), m["method"].as_str().unwrap_or(""));
            if let Some(v) = inflight.get(&key) {
                m["in_flight"] = v[0].clone();
                m["queue_size"] = v[1].clone();
            }
        }
        json!({
            "window_seconds": dt,
            "info": super::info_json(),
            "methods": methods,
            "clients": clients,
            "limits": super::config_json(ctx).get("limits").cloned().unwrap_or(Value::Null),
        })
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(f) => format!("{f:.digits$}"),
        None => "–".into(),
    }
}

fn method_rows(summary: &Value) -> String {
    let mut out = String::new();
    for m in summary["methods"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(m["service"].as_str().unwrap_or("")),
            esc(m["method"].as_str().unwrap_or("")),
            num(&m["rate"], 1),
            num(&m["error_rate"], 2),
            num(&m["p99_ms"], 2),
            m["total"],
            m["errors"],
            m["in_flight"],
            m["queue_size"],
        ));
    }
    out
}

fn client_rows(summary: &Value) -> String {
    let mut out = String::new();
    for c in summary["clients"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(c["client"].as_str().unwrap_or("")),
            num(&c["rate"], 1),
            num(&c["error_rate"], 2),
            num(&c["p99_ms"], 2),
            c["total"],
            c["errors"],
            c["rejections"],
        ));
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 20px}header h1{margin:0;font-size:18px}header .meta{color:#b8c0cc;font-size:12px}
nav{padding:8px 20px;background:#e8ebf0}nav a{margin-right:14px;color:#1a4fa0;text-decoration:none}nav a:hover{text-decoration:underline}
main{padding:12px 20px}section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;margin-bottom:14px}
h2{font-size:15px;margin:4px 0 8px}table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:left}
th{font-weight:600;background:#fafbfc}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}pre{margin:0;font-size:12px;overflow:auto;max-height:320px}
.muted{color:#6b7480;font-size:12px}#deps svg{max-width:100%;height:auto}
"#;

const SCRIPT: &str = r#"
(function(){
  function f(v,d){return (v===null||v===undefined)?'\u2013':Number(v).toFixed(d);}
  function esc(s){return String(s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
  function refresh(){
    fetch('/summary.json',{cache:'no-store'}).then(function(r){return r.json();}).then(function(s){
      var m=s.methods.map(function(x){return '<tr><td>'+esc(x.service)+'</td><td>'+esc(x.method)+'</td><td class=n>'+f(x.rate,1)+'</td><td class=n>'+f(x.error_rate,2)+'</td><td class=n>'+f(x.p99_ms,2)+'</td><td class=n>'+x.total+'</td><td class=n>'+x.errors+'</td><td class=n>'+x.in_flight+'</td><td class=n>'+x.queue_size+'</td></tr>';}).join('');
      document.getElementById('methods').innerHTML=m;
      var c=s.clients.map(function(x){return '<tr><td>'+esc(x.client)+'</td><td class=n>'+f(x.rate,1)+'</td><td class=n>'+f(x.error_rate,2)+'</td><td class=n>'+f(x.p99_ms,2)+'</td><td class=n>'+x.total+'</td><td class=n>'+x.errors+'</td><td class=n>'+x.rejections+'</td></tr>';}).join('');
      document.getElementById('clients').innerHTML=c;
      document.getElementById('limits').textContent=JSON.stringify(s.limits,null,2);
      document.getElementById('window').textContent=f(s.window_seconds,1);
      document.getElementById('uptime').textContent=f(s.info.uptime_seconds,0);
      document.body.setAttribute('data-refreshed',String(Date.now()));
    }).catch(function(){});
    fetch('/deps?format=svg',{cache:'no-store'}).then(function(r){return r.text();}).then(function(t){document.getElementById('deps').innerHTML=t;}).catch(function(){});
  }
  refresh();
  setInterval(refresh,2000);
})();
"#;

/// The admin page, with the figures of `summary` already in place (the
/// script refreshes them every two seconds).
pub(super) fn admin_html(summary: &Value, extensions: &[(String, String)]) -> String {
    let info = &summary["info"];
    let langs: Vec<String> = info["languages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| format!("{} {}", l["name"].as_str().unwrap_or(""), l["version"].as_str().unwrap_or("")))
        .collect();
    let mut links: Vec<(String, String)> = [
        ("/metrics", "metrics"),
        ("/info", "info"),
        ("/config", "config"),
        ("/loglevel", "log levels"),
        ("/rpcz", "rpcz"),
        ("/deps", "deps (JSON)"),
        ("/deps?format=dot", "deps (DOT)"),
        ("/deps?format=svg", "deps (SVG)"),
        ("/pprof/profile?seconds=10", "CPU profile (10 s)"),
        ("/pprof/profile?seconds=5&format=text", "CPU profile (text)"),
        ("/summary.json", "summary"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    links.extend(extensions.iter().cloned());
    let nav: String = links.iter().map(|(href, t)| format!("<a href=\"{}\">{}</a>", esc(href), esc(t))).collect();
    let limits = serde_json::to_string_pretty(&summary["limits"]).unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Courier admin · pid {pid}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<header><h1>Courier admin</h1><div class="meta">version {version} · git {git} · pid {pid} · up <span id="uptime">{uptime:.0}</span> s · {langs}</div></header>
<nav>{nav}</nav>
<main>
<section><h2>Methods served</h2><div class="muted">rates and p99 over the last <span id="window">{window:.1}</span> s; refreshed every 2 s</div>
<table><thead><tr><th>service</th><th>method</th><th class=n>req/s</th><th class=n>err/s</th><th class=n>p99 ms</th><th class=n>total</th><th class=n>errors</th><th class=n>in flight</th><th class=n>queued</th></tr></thead>
<tbody id="methods">{methods}</tbody></table></section>
<section><h2>Clients (by identity)</h2>
<table><thead><tr><th>client</th><th class=n>req/s</th><th class=n>err/s</th><th class=n>p99 ms</th><th class=n>total</th><th class=n>errors</th><th class=n>rejected</th></tr></thead>
<tbody id="clients">{clients}</tbody></table></section>
<section><h2>Dependencies</h2><div id="deps">{svg}</div></section>
<section><h2>Limits in force</h2><pre id="limits">{limits}</pre></section>
</main>
<script>{SCRIPT}</script>
</body></html>
"#,
        pid = info["pid"],
        version = esc(info["version"].as_str().unwrap_or("")),
        git = esc(info["git_hash"].as_str().unwrap_or("")),
        uptime = info["uptime_seconds"].as_f64().unwrap_or(0.0),
        langs = esc(&langs.join(", ")),
        window = summary["window_seconds"].as_f64().unwrap_or(0.0),
        methods = method_rows(summary),
        clients = client_rows(summary),
        svg = deps_svg(),
        limits = esc(&limits),
    )
}

/// The dependency graph as SVG, laid out in three columns: callers → this
/// process's methods → what it calls.
pub(super) fn deps_svg() -> String {
    let callers = stats::callers();
    let callees = stats::callees();
    let mut left: Vec<String> = Vec::new();
    let mut mid: Vec<String> = Vec::new();
    let mut right: Vec<String> = Vec::new();
    for e in &callers {
        if !left.contains(&e.caller) {
            left.push(e.caller.clone());
        }
        let m = format!("{}/{}", e.service, e.method);
        if !mid.contains(&m) {
            mid.push(m);
        }
    }
    for e in &callees {
        let m = format!("{}/{} @ {}", e.service, e.method, e.target);
        if !right.contains(&m) {
            right.push(m);
        }
    }
    let rows = left.len().max(mid.len()).max(right.len()).max(1);
    let (w, row_h, top) = (960.0_f64, 34.0_f64, 30.0_f64);
    let h = top + rows as f64 * row_h + 10.0;
    let (xl, xm, xr, bw) = (10.0, 340.0, 670.0, 280.0);
    let y = |i: usize| top + i as f64 * row_h;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica,Arial,sans-serif" font-size="12">"#
    );
    s.push_str(r##"<text x="10" y="18" fill="#6b7480">callers (identity)</text><text x="340" y="18" fill="#6b7480">methods served</text><text x="670" y="18" fill="#6b7480">called by this process</text>"##);
    if callers.is_empty() && callees.is_empty() {
        s.push_str(r##"<text x="10" y="44" fill="#6b7480">no calls yet</text>"##);
    }
    let max_calls = callers.iter().map(|e| e.calls).chain(callees.iter().map(|e| e.calls)).max().unwrap_or(1).max(1) as f64;
    let stroke = |calls: u64| 1.0 + 4.0 * ((calls as f64).ln_1p() / max_calls.ln_1p().max(1e-9));
    for e in &callers {
        let (Some(i), Some(j)) = (left.iter().position(|c| *c == e.caller), mid.iter().position(|m| *m == format!("{}/{}", e.service, e.method))) else {
            continue;
        };
        let color = if e.errors > 0 { "#c0392b" } else { "#7f8c9d" };
        s.push_str(&format!(
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="{:.1}"><title>{} → {}/{}: {} calls, {} errors</title></line>"#,
            xl + bw,
            y(i) + 11.0,
            xm,
            y(j) + 11.0,
            stroke(e.calls),
            esc(&e.caller),
            esc(&e.service),
            esc(&e.method),
            e.calls,
            e.errors
        ));
    }
    if !callees.is_empty() && !mid.is_empty() {
        for e in &callees {
            let Some(j) = right.iter().position(|m| *m == format!("{}/{} @ {}", e.service, e.method, e.target)) else { continue };
            s.push_str(&format!(
                r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#2e86de" stroke-width="{:.1}" stroke-dasharray="4 2"><title>{} calls, {} errors</title></line>"##,
                xm + bw,
                top + 11.0,
                xr,
                y(j) + 11.0,
                stroke(e.calls),
                e.calls,
                e.errors
            ));
        }
    }
    let boxes = |s: &mut String, x: f64, items: &[String], fill: &str| {
        for (i, t) in items.iter().enumerate() {
            s.push_str(&format!(
                r##"<rect x="{x}" y="{}" width="{bw}" height="22" rx="4" fill="{fill}" stroke="#9aa5b1"/><text x="{}" y="{}">{}</text>"##,
                y(i),
                x + 6.0,
                y(i) + 15.0,
                esc(t)
            ));
        }
    };
    boxes(&mut s, xl, &left, "#eef3fb");
    boxes(&mut s, xm, &mid, "#f3f8ee");
    boxes(&mut s, xr, &right, "#fbf5ea");
    for e in &callers {
        if let (Some(i), Some(j)) = (left.iter().position(|c| *c == e.caller), mid.iter().position(|m| *m == format!("{}/{}", e.service, e.method))) {
            let (mx, my) = ((xl + bw + xm) / 2.0, (y(i) + y(j)) / 2.0 + 8.0);
            s.push_str(&format!(r##"<text x="{mx}" y="{my}" font-size="10" text-anchor="middle" fill="#34495e">{} / {}</text>"##, e.calls, e.errors));
        }
    }
    s.push_str("</svg>");
    s
}
