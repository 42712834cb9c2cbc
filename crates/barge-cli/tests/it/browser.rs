//! A real browser for page tests: Debian's headless Chromium driven through chromedriver's
//! WebDriver protocol (plain HTTP and JSON, spoken here over a TCP stream).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session that logs every
    /// network request (the `performance` log).
    pub fn start() -> Browser {
        let port = crate::support::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed");
        let mut browser = Browser { driver, port, session: String::new() };
        crate::support::wait_for_port(port);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking", "--disable-component-update"]
            },
            "goog:loggingPrefs": {"performance": "ALL"}
        }}});
        let session = browser.call("POST", "/session", Some(capabilities));
        browser.session = session["sessionId"].as_str().expect("a session").to_string();
        browser
    }

    /// One WebDriver call; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        // The head, then as many bytes as it announces (the driver may keep the connection open).
        let mut response = Vec::new();
        let mut buf = [0u8; 8192];
        let (head, length) = loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "chromedriver closed the connection");
            response.extend_from_slice(&buf[..n]);
            if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
                response.drain(..end + 4);
                break (head, length);
            }
        };
        let payload = match length {
            Some(length) => {
                while response.len() < length {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "chromedriver closed the connection");
                    response.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&response[..length]).into_owned()
            }
            None => {
                stream.read_to_end(&mut response).unwrap();
                let body = String::from_utf8_lossy(&response).into_owned();
                if head.contains("transfer-encoding: chunked") { dechunk(&body) } else { body }
            }
        };
        let value: Value = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}: {payload}"));
        assert!(value["value"].get("error").is_none(), "{method} {path}: {value}");
        value["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &format!("/session/{}/url", self.session), Some(json!({"url": url})));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text of the element with id `id`.
    pub fn text(&self, id: &str) -> String {
        self.eval(&format!("const e = document.getElementById('{id}'); return e ? e.textContent : null;"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the element `id`'s text satisfies `ok`; the text.
    pub fn wait_text(&self, id: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(id);
            if ok(&text) {
                return text;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "#{id} stayed {text:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every URL the page requested since the session began (Chromium's network log).
    pub fn requested(&self) -> Vec<String> {
        let log = self.call("POST", &format!("/session/{}/se/log", self.session), Some(json!({"type": "performance"})));
        log.as_array()
            .unwrap()
            .iter()
            .filter_map(|entry| serde_json::from_str::<Value>(entry["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .filter_map(|m| m["message"]["params"]["request"]["url"].as_str().map(String::from))
            .collect()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
