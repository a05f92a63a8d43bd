//! A real browser for tests: Debian's headless Chromium driven over WebDriver
//! by chromedriver, each started for one test on a free port with a profile
//! of its own, and stopped (the whole process group) when dropped.
//!
//! `scripts/test.sh` installs the `chromium` and `chromium-driver` packages
//! where they are missing; where they still are not there (no package
//! manager, no network), [`Browser::start`] says so and the caller skips.
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::WAIT;
use super::process::free_port;

/// A WebDriver session in headless Chromium.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn binary(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver and a browser session of `width` × `height`; `None`
    /// (with the reason printed) where Chromium or chromedriver is missing.
    pub async fn start(width: u32, height: u32) -> Option<Self> {
        let chromium = binary("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        for (what, path, package) in [
            ("Chromium", &chromium, "chromium"),
            ("chromedriver", &chromedriver, "chromium-driver"),
        ] {
            if !path.exists() {
                eprintln!(
                    "SKIPPED: {what} is not installed at {} (Debian package {package}; \
                     scripts/test.sh installs it where apt-get can)",
                    path.display()
                );
                return None;
            }
        }
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("run {}: {err}", chromedriver.display()));
        let profile =
            std::env::temp_dir().join(format!("console-test-{}", uuid::Uuid::new_v4().simple()));
        let mut browser = BrowserStarting {
            driver: Some(driver),
            profile: profile.clone(),
        };
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root in containers, where the sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no WebDriver session from chromedriver at {url}: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Some(Self {
            client,
            driver: browser.driver.take().expect("the driver is running"),
            profile,
        })
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits until the first element matching `css` has text for which
    /// `condition` holds; returns that text.
    pub async fn wait_text(
        &self,
        what: &str,
        css: &str,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if let Some(text) = &text
                && condition(text)
            {
                return text.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what} ({css} shows {text:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// Runs `script` in the page; its return value.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("run {script:?}: {err}"))
    }

    /// The path and query of the page shown.
    pub async fn location(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Saves a PNG of the window as `dir/name.png`.
    pub async fn screenshot(&self, dir: &std::path::Path, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(dir).expect("create the screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Ends the session and stops the driver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(WAIT, self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The driver while the session starts: stopped if starting fails.
struct BrowserStarting {
    driver: Option<Child>,
    profile: PathBuf,
}

impl Drop for BrowserStarting {
    fn drop(&mut self) {
        if let Some(driver) = &mut self.driver {
            stop(driver);
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// Stops chromedriver and the browsers it started (its process group).
fn stop(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .status();
    let _ = driver.wait();
}
