//! Datatypes: how items become WebSocket messages and back.
//!
//! | datatype | item types | sends | accepts |
//! |---|---|---|---|
//! | [`Text`] | `String`, [`Utf8Bytes`], [`WSMessage`] (text only) | text frames | text; binary if valid UTF-8 |
//! | [`Binary`] | `Vec<u8>`, [`Bytes`], [`WSMessage`] (binary only) | binary frames | binary; text is a decode error |
//! | [`Json`] | any `Serialize + DeserializeOwned` | text frames of JSON | text or binary JSON |
//! | [`Raw`] | [`WSMessage`] | the item's own kind | both kinds, kind preserved |
//! | `Pickle`, `PickleValue` | serde types; dynamic Python values | binary Python pickle | binary pickle (feature `pickle`, `rxplus::ws::pickle`) |
//!
//! A frame that fails to decode is logged and counted and the connection keeps going; an item
//! a datatype cannot encode (for example a binary [`WSMessage`] given to [`Text`]) is an error
//! notification, never a panic.
//!
//! [`Utf8Bytes`] and [`Bytes`] items are the zero-copy choice: a received message reaches the
//! subscriber in the buffer tungstenite read it into (no allocation, no copy), and cloning one
//! for several subscribers or connections is a reference count. `String` and `Vec<u8>` items
//! cost one allocation and copy per received message.
//!
//! ```
//! use rxplus::ws::{Bytes, Datatype, Text, Utf8Bytes, Binary};
//!
//! let m = Datatype::<Utf8Bytes>::encode(&Text, Utf8Bytes::from_static("hi")).unwrap();
//! assert_eq!(Datatype::<Utf8Bytes>::decode(&Text, m).unwrap(), "hi");
//! let m = Datatype::<Bytes>::encode(&Binary, Bytes::from_static(b"\x01\x02")).unwrap();
//! assert_eq!(&Datatype::<Bytes>::decode(&Binary, m).unwrap()[..], &[1, 2]);
//! ```
//!
//! ```
//! use rxplus::ws::{Datatype, Json, Text, WSMessage};
//!
//! let msg = Datatype::<String>::encode(&Text, "hi".to_string()).unwrap();
//! assert_eq!(Datatype::<String>::decode(&Text, msg).unwrap(), "hi");
//! // The wrong kind for a datatype is an error, not a panic:
//! assert!(Datatype::<WSMessage>::encode(&Text, WSMessage::Binary(vec![1])).is_err());
//! let v = serde_json::json!({"a": 1});
//! let m = Json.encode(v.clone()).unwrap();
//! assert_eq!(Datatype::<serde_json::Value>::decode(&Json, m).unwrap(), v);
//! ```

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tungstenite::{Bytes, Message, Utf8Bytes};

use crate::error::CodecError;

/// A data message as an item: text stays text, binary stays binary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WSMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl WSMessage {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            WSMessage::Text(s) => s.len(),
            WSMessage::Binary(b) => b.len(),
        }
    }
    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for WSMessage {
    fn from(s: String) -> Self {
        WSMessage::Text(s)
    }
}
impl From<&str> for WSMessage {
    fn from(s: &str) -> Self {
        WSMessage::Text(s.to_owned())
    }
}
impl From<Vec<u8>> for WSMessage {
    fn from(b: Vec<u8>) -> Self {
        WSMessage::Binary(b)
    }
}

/// Turns items into WebSocket messages and back. Implement it for your own wire formats.
///
/// Errors keep their cause ([`CodecError`]); the component adds its name and counts them.
pub trait Datatype<T>: Send + Sync + 'static {
    /// A short name for logs and errors, e.g. `text`.
    fn name(&self) -> &'static str;
    /// Turns an item into a message.
    ///
    /// # Errors
    /// The reason the item cannot be sent with this datatype.
    fn encode(&self, item: T) -> Result<Message, CodecError>;
    /// Turns a received data message (text or binary) into an item.
    ///
    /// # Errors
    /// The reason the message is not a valid item.
    fn decode(&self, msg: Message) -> Result<T, CodecError>;
}

/// Text frames; a received binary frame that is valid UTF-8 is accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;
/// Binary frames; a received text frame is a decode error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binary;
/// JSON through serde, sent as text frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;
/// The message as it is: text stays text, binary stays binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

fn binary_to_string(b: tungstenite::Bytes) -> Result<String, CodecError> {
    String::from_utf8(b.into())
        .map_err(|e| CodecError::context("binary frame is not valid UTF-8", e))
}

fn not_data(msg: &Message) -> CodecError {
    CodecError::msg(format!("not a data message: {msg:?}"))
}

impl Datatype<String> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(&self, item: String) -> Result<Message, CodecError> {
        Ok(Message::Text(item.into()))
    }
    fn decode(&self, msg: Message) -> Result<String, CodecError> {
        match msg {
            Message::Text(s) => Ok(s.as_str().to_owned()),
            Message::Binary(b) => binary_to_string(b),
            other => Err(not_data(&other)),
        }
    }
}

impl Datatype<Utf8Bytes> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(&self, item: Utf8Bytes) -> Result<Message, CodecError> {
        Ok(Message::Text(item))
    }
    fn decode(&self, msg: Message) -> Result<Utf8Bytes, CodecError> {
        match msg {
            Message::Text(s) => Ok(s),
            Message::Binary(b) => Utf8Bytes::try_from(b)
                .map_err(|e| CodecError::context("binary frame is not valid UTF-8", e)),
            other => Err(not_data(&other)),
        }
    }
}

impl Datatype<WSMessage> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(&self, item: WSMessage) -> Result<Message, CodecError> {
        match item {
            WSMessage::Text(s) => Ok(Message::Text(s.into())),
            WSMessage::Binary(_) => Err(CodecError::msg(
                "Text datatype expects a text item, got binary",
            )),
        }
    }
    fn decode(&self, msg: Message) -> Result<WSMessage, CodecError> {
        Datatype::<String>::decode(self, msg).map(WSMessage::Text)
    }
}

impl Datatype<Vec<u8>> for Binary {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, item: Vec<u8>) -> Result<Message, CodecError> {
        Ok(Message::Binary(item.into()))
    }
    fn decode(&self, msg: Message) -> Result<Vec<u8>, CodecError> {
        match msg {
            Message::Binary(b) => Ok(b.into()),
            Message::Text(_) => Err(CodecError::msg("Binary datatype received a text frame")),
            other => Err(not_data(&other)),
        }
    }
}

impl Datatype<Bytes> for Binary {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, item: Bytes) -> Result<Message, CodecError> {
        Ok(Message::Binary(item))
    }
    fn decode(&self, msg: Message) -> Result<Bytes, CodecError> {
        match msg {
            Message::Binary(b) => Ok(b),
            Message::Text(_) => Err(CodecError::msg("Binary datatype received a text frame")),
            other => Err(not_data(&other)),
        }
    }
}

impl Datatype<WSMessage> for Binary {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, item: WSMessage) -> Result<Message, CodecError> {
        match item {
            WSMessage::Binary(b) => Ok(Message::Binary(b.into())),
            WSMessage::Text(_) => Err(CodecError::msg(
                "Binary datatype expects a binary item, got text",
            )),
        }
    }
    fn decode(&self, msg: Message) -> Result<WSMessage, CodecError> {
        Datatype::<Vec<u8>>::decode(self, msg).map(WSMessage::Binary)
    }
}

impl<T: Serialize + DeserializeOwned> Datatype<T> for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn encode(&self, item: T) -> Result<Message, CodecError> {
        // The inherent method (for any `Serialize`) is the one implementation.
        Json::encode(self, item)
    }
    fn decode(&self, msg: Message) -> Result<T, CodecError> {
        let res = match &msg {
            Message::Text(s) => serde_json::from_str(s.as_str()),
            Message::Binary(b) => serde_json::from_slice(b),
            other => return Err(not_data(other)),
        };
        res.map_err(|e| CodecError::context("invalid JSON", e))
    }
}

impl Json {
    /// Encodes any serializable value (a convenience for `Datatype::<T>::encode`).
    ///
    /// # Errors
    /// The serializer's reason.
    pub fn encode<T: Serialize>(&self, item: T) -> Result<Message, CodecError> {
        serde_json::to_string(&item)
            .map(|s| Message::Text(s.into()))
            .map_err(|e| CodecError::context("cannot serialize", e))
    }
}

impl Datatype<WSMessage> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn encode(&self, item: WSMessage) -> Result<Message, CodecError> {
        Ok(match item {
            WSMessage::Text(s) => Message::Text(s.into()),
            WSMessage::Binary(b) => Message::Binary(b.into()),
        })
    }
    fn decode(&self, msg: Message) -> Result<WSMessage, CodecError> {
        match msg {
            Message::Text(s) => Ok(WSMessage::Text(s.as_str().to_owned())),
            Message::Binary(b) => Ok(WSMessage::Binary(b.into())),
            other => Err(not_data(&other)),
        }
    }
}

/// The datatype to use for each path, shared by a server's or a group's connections.
pub struct Datatypes<T>(Arc<Selector<T>>);

type Selector<T> = dyn Fn(&str) -> Arc<dyn Datatype<T>> + Send + Sync;

impl<T> Clone for Datatypes<T> {
    fn clone(&self) -> Self {
        Datatypes(self.0.clone())
    }
}

impl<T> fmt::Debug for Datatypes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Datatypes")
    }
}

impl<T: 'static> Datatypes<T> {
    /// The same datatype on every path.
    pub fn same(d: impl Datatype<T>) -> Self {
        let d: Arc<dyn Datatype<T>> = Arc::new(d);
        Datatypes(Arc::new(move |_| d.clone()))
    }

    /// A datatype chosen per path. The chooser runs once per new path, never under a lock of
    /// the component, so it may call back into it.
    ///
    /// ```
    /// use rxplus::ws::{Binary, Datatype, Datatypes, Raw, Text, WSMessage};
    /// use std::sync::Arc;
    ///
    /// let d = Datatypes::<WSMessage>::per_path(|path| -> Arc<dyn Datatype<WSMessage>> {
    ///     match path {
    ///         "/chat" => Arc::new(Text),
    ///         "/blobs" => Arc::new(Binary),
    ///         _ => Arc::new(Raw),
    ///     }
    /// });
    /// assert_eq!(d.for_path("/chat").name(), "text");
    /// ```
    pub fn per_path(f: impl Fn(&str) -> Arc<dyn Datatype<T>> + Send + Sync + 'static) -> Self {
        Datatypes(Arc::new(f))
    }

    /// The datatype for `path`.
    pub fn for_path(&self, path: &str) -> Arc<dyn Datatype<T>> {
        (self.0)(path)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> From<Json> for Datatypes<T> {
    fn from(d: Json) -> Self {
        Datatypes::same(d)
    }
}
impl From<Text> for Datatypes<String> {
    fn from(d: Text) -> Self {
        Datatypes::same(d)
    }
}
impl From<Text> for Datatypes<Utf8Bytes> {
    fn from(d: Text) -> Self {
        Datatypes::same(d)
    }
}
impl From<Binary> for Datatypes<Bytes> {
    fn from(d: Binary) -> Self {
        Datatypes::same(d)
    }
}
impl From<Text> for Datatypes<WSMessage> {
    fn from(d: Text) -> Self {
        Datatypes::same(d)
    }
}
impl From<Binary> for Datatypes<Vec<u8>> {
    fn from(d: Binary) -> Self {
        Datatypes::same(d)
    }
}
impl From<Binary> for Datatypes<WSMessage> {
    fn from(d: Binary) -> Self {
        Datatypes::same(d)
    }
}
impl From<Raw> for Datatypes<WSMessage> {
    fn from(d: Raw) -> Self {
        Datatypes::same(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_accepts_utf8_binary_and_rejects_invalid() {
        let ok = Message::Binary(tungstenite::Bytes::from_static(b"hey"));
        assert_eq!(Datatype::<String>::decode(&Text, ok).unwrap(), "hey");
        let bad = Message::Binary(tungstenite::Bytes::from_static(&[0xff, 0xfe]));
        assert!(Datatype::<String>::decode(&Text, bad)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
    }

    #[test]
    fn bytes_rejects_text_and_names_itself_in_errors() {
        let e = Datatype::<Vec<u8>>::decode(&Binary, Message::Text("x".into())).unwrap_err();
        assert!(e.to_string().contains("Binary"), "{e}");
        let e = Datatype::<WSMessage>::encode(&Binary, WSMessage::Text("x".into())).unwrap_err();
        assert!(e.to_string().contains("Binary datatype"), "{e}");
    }

    #[test]
    fn shared_buffer_items_keep_the_received_buffer() {
        // The decoded item is the message's own buffer: same pointer, no copy.
        let payload = Bytes::from(vec![7u8; 64]);
        let ptr = payload.as_ptr();
        let got = Datatype::<Bytes>::decode(&Binary, Message::Binary(payload)).unwrap();
        assert_eq!(got.as_ptr(), ptr);
        let text = Utf8Bytes::from("x".repeat(64));
        let ptr = text.as_ptr();
        let got = Datatype::<Utf8Bytes>::decode(&Text, Message::Text(text)).unwrap();
        assert_eq!(got.as_ptr(), ptr);
        // A valid UTF-8 binary frame is text too; an invalid one is an error, not a panic.
        let got = Datatype::<Utf8Bytes>::decode(&Text, Message::Binary(Bytes::from_static(b"ok")));
        assert_eq!(got.unwrap(), "ok");
        let bad =
            Datatype::<Utf8Bytes>::decode(&Text, Message::Binary(Bytes::from_static(&[0xff])));
        assert!(bad.unwrap_err().to_string().contains("UTF-8"));
        assert!(Datatype::<Bytes>::decode(&Binary, Message::Text("x".into())).is_err());
    }

    #[test]
    fn raw_preserves_kind() {
        for m in [WSMessage::Text("a".into()), WSMessage::Binary(vec![1, 2])] {
            let wire = Raw.encode(m.clone()).unwrap();
            assert_eq!(Raw.decode(wire).unwrap(), m);
        }
    }

    #[test]
    fn json_accepts_any_serializable_value() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct P {
            x: i32,
        }
        let m = Datatype::<P>::encode(&Json, P { x: 3 }).unwrap();
        assert!(matches!(&m, Message::Text(t) if t.as_str() == r#"{"x":3}"#));
        assert_eq!(Datatype::<P>::decode(&Json, m).unwrap(), P { x: 3 });
        assert!(Datatype::<P>::decode(&Json, Message::Text("{".into())).is_err());
    }
}
