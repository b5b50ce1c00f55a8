use async_nats::jetstream;

/// A stream name and subject prefix of the test's own on a NATS server
/// (`TEST_NATS_URL`, default nats://127.0.0.1:4222); its streams are deleted
/// at the end.
pub struct TestNats {
    pub url: String,
    pub stream: String,
    pub dead_letter_stream: String,
    pub subject_prefix: String,
}

impl TestNats {
    pub fn new() -> TestNats {
        Self::on(std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()))
    }

    pub fn on(url: String) -> TestNats {
        let id = crate::unique_name("");
        TestNats {
            url,
            stream: format!("T{id}"),
            dead_letter_stream: format!("T{id}_DLQ"),
            subject_prefix: format!("t{id}.order"),
        }
    }

    /// The settings the services would derive from [`Self::service_env`].
    pub fn settings(&self) -> platform::config::NatsSettings {
        platform::config::NatsSettings {
            addr: self.url.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            dead_letter_stream: self.dead_letter_stream.clone(),
        }
    }

    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_ADDR".into(), self.url.clone()),
            ("NATS_STREAM".into(), self.stream.clone()),
            ("NATS_DLQ_STREAM".into(), self.dead_letter_stream.clone()),
            ("NATS_SUBJECT_PREFIX".into(), self.subject_prefix.clone()),
        ]
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach test NATS at {}: {e}", self.url))
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }

    /// Every message of the test's dead-letter stream (none when it does not
    /// exist yet), read without consuming them for anybody else.
    pub async fn dead_letters(&self) -> Vec<jetstream::Message> {
        use futures::StreamExt;
        let js = self.jetstream().await;
        let Ok(mut stream) = js.get_stream(&self.dead_letter_stream).await else {
            return Vec::new();
        };
        let count = stream.info().await.expect("stream info").state.messages as usize;
        if count == 0 {
            return Vec::new();
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .expect("an ephemeral consumer");
        let mut messages = consumer
            .fetch()
            .max_messages(count)
            .messages()
            .await
            .expect("a fetch");
        let mut out = Vec::new();
        while let Some(message) = messages.next().await {
            out.push(message.expect("a message"));
        }
        out
    }
}

impl Default for TestNats {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let url = self.url.clone();
        let streams = [self.stream.clone(), self.dead_letter_stream.clone()];
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(std::time::Duration::from_secs(2))
                    .connect(url);
                if let Ok(Ok(client)) =
                    tokio::time::timeout(std::time::Duration::from_secs(3), connect).await
                {
                    let js = jetstream::new(client);
                    for stream in streams {
                        let _ = js.delete_stream(&stream).await;
                    }
                }
            });
        })
        .join();
    }
}
