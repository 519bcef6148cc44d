//! The text log format's fields, byte for byte as tracing's default formatter writes them (`name=value`,
//! strings quoted and escaped as `Debug` escapes them), without `Debug`'s character-by-character escaping
//! for the common case: a string of printable ASCII with no quote or backslash is copied as it is, and an
//! integer is written with `itoa`. Anything else (the message, other types, strings that need escaping,
//! ANSI output) goes through tracing's own `DefaultVisitor`. The per-request log line is on every send's
//! path; this halves what formatting its fields costs.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// A duration as milliseconds rounded to the microsecond, for a log field: `latency_ms=1.234`, a number in
/// both formats, never `1.2345678901` nor a `Debug` string such as `1.234567ms`.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    (d.as_nanos() as f64 / 1_000.0).round() / 1_000.0
}

/// The field formatter for `tracing_subscriber::fmt().fmt_fields(...)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { writer, is_empty: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

/// A string `Debug` writes as it is, between quotes.
fn plain(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visitor<'_> {
    /// The fast path applies: no colours, and a field of our own (not the message, not `log.` metadata or
    /// a raw identifier, which the default visitor treats apart).
    fn fast(&self, field: &Field) -> bool {
        let name = field.name();
        self.result.is_ok()
            && !self.writer.has_ansi_escapes()
            && name != "message"
            && !name.starts_with("log.")
            && !name.starts_with("r#")
    }

    fn write_name(&mut self, field: &Field) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// One field through tracing's own visitor.
    fn default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.fast(field) && plain(value) {
            self.result = self.write_name(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            });
        } else {
            self.default(field, |v| v.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.fast(field) {
            self.result =
                self.write_name(field).and_then(|()| self.writer.write_str(itoa::Buffer::new().format(value)));
        } else {
            self.default(field, |v| v.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.fast(field) {
            self.result =
                self.write_name(field).and_then(|()| self.writer.write_str(itoa::Buffer::new().format(value)));
        } else {
            self.default(field, |v| v.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.fast(field) {
            self.result =
                self.write_name(field).and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
        } else {
            self.default(field, |v| v.record_bool(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.default(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.default(field, |v| v.record_debug(field, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn durations_print_as_milliseconds_to_the_microsecond() {
        use std::time::Duration;
        assert_eq!(millis(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(millis(Duration::from_nanos(400)), 0.0);
        assert_eq!(millis(Duration::from_secs(2)), 2000.0);
        assert_eq!(format!("{}", millis(Duration::from_nanos(523_456))), "0.523");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() {
        let error = std::io::Error::other("disk on fire");
        tracing::info!(
            request_id = %"0123abcd",
            route = "native",
            tenant = "acme",
            phone = Some(tracing::field::display("+86138****8000")),
            country = Some("CN"),
            usage = None::<&str>,
            outcome = "rate_limited",
            upstream_ms = 12.5f64,
            latency_ms = 0.25f64,
            count = 42u64,
            delta = -7i64,
            replayed = Some(true),
            quoted = "say \"hi\"",
            backslash = "a\\b",
            newline = "two\nlines",
            unicode = "短信",
            control = "bell\u{7}",
            empty = "",
            r#type = "raw",
            error = &error as &(dyn std::error::Error + 'static),
            "send request"
        );
        tracing::warn!(tenant = "acme", "a \"quoted\" message with \u{1b}[31m escape");
        tracing::info!("message only");
        tracing::info!(only = 1u64);
    }

    fn render(fast: bool) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let builder = tracing_subscriber::fmt().without_time().with_ansi(false).with_writer(move || out.clone());
        if fast {
            tracing::subscriber::with_default(builder.fmt_fields(TextFields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn fields_read_exactly_as_the_default_formatter_writes_them() {
        let (default, fast) = (render(false), render(true));
        assert!(default.contains(r#"route="native""#), "{default}");
        assert!(default.contains(r#"quoted="say \"hi\"""#), "{default}");
        assert_eq!(fast, default);
    }
}
