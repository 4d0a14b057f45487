//! Datatypes: how items become WebSocket messages and back.
//!
//! | datatype | item types | sends | accepts |
//! |---|---|---|---|
//! | [`Text`] | `String`, [`WsMessage`] (text only) | text frames | text; binary if valid UTF-8 |
//! | [`Bytes`] | `Vec<u8>`, [`WsMessage`] (binary only) | binary frames | binary; text is a decode error |
//! | [`Json`] | any `Serialize + DeserializeOwned` | text frames of JSON | text or binary JSON |
//! | [`Raw`] | [`WsMessage`] | the item's own kind | both kinds, kind preserved |
//!
//! A frame that fails to decode is logged and counted and the connection keeps going; an item
//! a datatype cannot encode (for example a binary [`WsMessage`] given to [`Text`]) is an error
//! notification, never a panic.
//!
//! ```
//! use rxplus::ws::{Datatype, Json, Text, WsMessage};
//!
//! let msg = Datatype::<String>::encode(&Text, "hi".to_string()).unwrap();
//! assert_eq!(Datatype::<String>::decode(&Text, msg).unwrap(), "hi");
//! // The wrong kind for a datatype is an error, not a panic:
//! assert!(Datatype::<WsMessage>::encode(&Text, WsMessage::Binary(vec![1])).is_err());
//! let v = serde_json::json!({"a": 1});
//! let m = Json.encode(v.clone()).unwrap();
//! assert_eq!(Datatype::<serde_json::Value>::decode(&Json, m).unwrap(), v);
//! ```

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tungstenite::Message;

/// A data message as an item: text stays text, binary stays binary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl WsMessage {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            WsMessage::Text(s) => s.len(),
            WsMessage::Binary(b) => b.len(),
        }
    }
    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for WsMessage {
    fn from(s: String) -> Self {
        WsMessage::Text(s)
    }
}
impl From<&str> for WsMessage {
    fn from(s: &str) -> Self {
        WsMessage::Text(s.to_owned())
    }
}
impl From<Vec<u8>> for WsMessage {
    fn from(b: Vec<u8>) -> Self {
        WsMessage::Binary(b)
    }
}

/// Turns items into WebSocket messages and back. Implement it for your own wire formats.
///
/// Errors are plain reasons; the component adds its name and counts them.
pub trait Datatype<T>: Send + Sync + 'static {
    /// A short name for logs and errors, e.g. `text`.
    fn name(&self) -> &'static str;
    /// Turns an item into a message.
    ///
    /// # Errors
    /// The reason the item cannot be sent with this datatype.
    fn encode(&self, item: T) -> Result<Message, String>;
    /// Turns a received data message (text or binary) into an item.
    ///
    /// # Errors
    /// The reason the message is not a valid item.
    fn decode(&self, msg: Message) -> Result<T, String>;
}

/// Text frames; a received binary frame that is valid UTF-8 is accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;
/// Binary frames; a received text frame is a decode error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;
/// JSON through serde, sent as text frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;
/// The message as it is: text stays text, binary stays binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

fn binary_to_string(b: tungstenite::Bytes) -> Result<String, String> {
    String::from_utf8(b.into()).map_err(|e| format!("binary frame is not valid UTF-8: {e}"))
}

impl Datatype<String> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(&self, item: String) -> Result<Message, String> {
        Ok(Message::Text(item.into()))
    }
    fn decode(&self, msg: Message) -> Result<String, String> {
        match msg {
            Message::Text(s) => Ok(s.as_str().to_owned()),
            Message::Binary(b) => binary_to_string(b),
            other => Err(format!("not a data message: {other:?}")),
        }
    }
}

impl Datatype<WsMessage> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(&self, item: WsMessage) -> Result<Message, String> {
        match item {
            WsMessage::Text(s) => Ok(Message::Text(s.into())),
            WsMessage::Binary(_) => Err("Text datatype expects a text item, got binary".into()),
        }
    }
    fn decode(&self, msg: Message) -> Result<WsMessage, String> {
        Datatype::<String>::decode(self, msg).map(WsMessage::Text)
    }
}

impl Datatype<Vec<u8>> for Bytes {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, item: Vec<u8>) -> Result<Message, String> {
        Ok(Message::Binary(item.into()))
    }
    fn decode(&self, msg: Message) -> Result<Vec<u8>, String> {
        match msg {
            Message::Binary(b) => Ok(b.into()),
            Message::Text(_) => Err("Bytes datatype received a text frame".into()),
            other => Err(format!("not a data message: {other:?}")),
        }
    }
}

impl Datatype<WsMessage> for Bytes {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn encode(&self, item: WsMessage) -> Result<Message, String> {
        match item {
            WsMessage::Binary(b) => Ok(Message::Binary(b.into())),
            WsMessage::Text(_) => Err("Bytes datatype expects a binary item, got text".into()),
        }
    }
    fn decode(&self, msg: Message) -> Result<WsMessage, String> {
        Datatype::<Vec<u8>>::decode(self, msg).map(WsMessage::Binary)
    }
}

impl<T: Serialize + DeserializeOwned> Datatype<T> for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn encode(&self, item: T) -> Result<Message, String> {
        // The inherent method (for any `Serialize`) is the one implementation.
        Json::encode(self, item)
    }
    fn decode(&self, msg: Message) -> Result<T, String> {
        let res = match &msg {
            Message::Text(s) => serde_json::from_str(s.as_str()),
            Message::Binary(b) => serde_json::from_slice(b),
            other => return Err(format!("not a data message: {other:?}")),
        };
        res.map_err(|e| format!("invalid JSON: {e}"))
    }
}

impl Json {
    /// Encodes any serializable value (a convenience for `Datatype::<T>::encode`).
    ///
    /// # Errors
    /// The serializer's reason.
    pub fn encode<T: Serialize>(&self, item: T) -> Result<Message, String> {
        serde_json::to_string(&item)
            .map(|s| Message::Text(s.into()))
            .map_err(|e| format!("cannot serialize: {e}"))
    }
}

impl Datatype<WsMessage> for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn encode(&self, item: WsMessage) -> Result<Message, String> {
        Ok(match item {
            WsMessage::Text(s) => Message::Text(s.into()),
            WsMessage::Binary(b) => Message::Binary(b.into()),
        })
    }
    fn decode(&self, msg: Message) -> Result<WsMessage, String> {
        match msg {
            Message::Text(s) => Ok(WsMessage::Text(s.as_str().to_owned())),
            Message::Binary(b) => Ok(WsMessage::Binary(b.into())),
            other => Err(format!("not a data message: {other:?}")),
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

    /// A datatype chosen per path, like the Python original's `datatype=callable(path)`.
    ///
    /// ```
    /// use rxplus::ws::{Bytes, Datatype, Datatypes, Raw, Text, WsMessage};
    /// use std::sync::Arc;
    ///
    /// let d = Datatypes::<WsMessage>::per_path(|path| -> Arc<dyn Datatype<WsMessage>> {
    ///     match path {
    ///         "/chat" => Arc::new(Text),
    ///         "/blobs" => Arc::new(Bytes),
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
impl From<Text> for Datatypes<WsMessage> {
    fn from(d: Text) -> Self {
        Datatypes::same(d)
    }
}
impl From<Bytes> for Datatypes<Vec<u8>> {
    fn from(d: Bytes) -> Self {
        Datatypes::same(d)
    }
}
impl From<Bytes> for Datatypes<WsMessage> {
    fn from(d: Bytes) -> Self {
        Datatypes::same(d)
    }
}
impl From<Raw> for Datatypes<WsMessage> {
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
            .contains("UTF-8"));
    }

    #[test]
    fn bytes_rejects_text_and_names_itself_in_errors() {
        let e = Datatype::<Vec<u8>>::decode(&Bytes, Message::Text("x".into())).unwrap_err();
        assert!(e.contains("Bytes"), "{e}");
        let e = Datatype::<WsMessage>::encode(&Bytes, WsMessage::Text("x".into())).unwrap_err();
        assert!(e.contains("Bytes datatype"), "{e}");
    }

    #[test]
    fn raw_preserves_kind() {
        for m in [WsMessage::Text("a".into()), WsMessage::Binary(vec![1, 2])] {
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
