//! [`Tag`]: the path a [`TaggedData`](crate::ws::TaggedData) item belongs to.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use smol_str::SmolStr;

/// A path tag, such as `/chat`: an immutable string that is cheap to clone.
///
/// A path of up to 23 bytes is stored inline, so cloning it (once per inbound message, to tag
/// it) copies 24 bytes and touches no reference count; a longer one is shared behind an
/// `Arc<str>`. It derefs to `str`, compares with `str`, `&str` and `String`, and converts
/// from them.
///
/// ```
/// use rxplus::ws::{TaggedData, Tag};
///
/// let tag = Tag::from("/chat");
/// assert_eq!(tag, "/chat");
/// assert!(tag.starts_with("/ch"));
/// let item = TaggedData::new(tag.clone(), 1);
/// assert_eq!(&*item.tag, "/chat");
/// assert_eq!(format!("[{:>6}]", item.tag), "[ /chat]");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(SmolStr);

impl Tag {
    /// A tag for `path`.
    pub fn new(path: &str) -> Self {
        Tag(SmolStr::new(path))
    }
    /// The path.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Tag {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Tag {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0.as_str(), f)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl From<&str> for Tag {
    fn from(s: &str) -> Self {
        Tag(SmolStr::new(s))
    }
}

impl From<&String> for Tag {
    fn from(s: &String) -> Self {
        Tag(SmolStr::new(s))
    }
}

impl From<String> for Tag {
    fn from(s: String) -> Self {
        Tag(SmolStr::from(s))
    }
}

impl From<Cow<'_, str>> for Tag {
    fn from(s: Cow<'_, str>) -> Self {
        Tag(SmolStr::new(s))
    }
}

impl From<Box<str>> for Tag {
    fn from(s: Box<str>) -> Self {
        Tag(SmolStr::from(s))
    }
}

impl From<Arc<str>> for Tag {
    fn from(s: Arc<str>) -> Self {
        Tag(SmolStr::from(s))
    }
}

impl From<&Arc<str>> for Tag {
    fn from(s: &Arc<str>) -> Self {
        Tag(SmolStr::new(&**s))
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> Self {
        t.0.into()
    }
}

impl From<Tag> for Arc<str> {
    fn from(t: Tag) -> Self {
        t.0.into()
    }
}

impl PartialEq<str> for Tag {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Tag {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialEq<String> for Tag {
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<Arc<str>> for Tag {
    fn eq(&self, o: &Arc<str>) -> bool {
        self.as_str() == &**o
    }
}

impl PartialEq<Tag> for Arc<str> {
    fn eq(&self, o: &Tag) -> bool {
        &**self == o.as_str()
    }
}

impl PartialEq<Tag> for str {
    fn eq(&self, o: &Tag) -> bool {
        self == o.as_str()
    }
}

impl PartialEq<Tag> for &str {
    fn eq(&self, o: &Tag) -> bool {
        *self == o.as_str()
    }
}

impl PartialEq<Tag> for String {
    fn eq(&self, o: &Tag) -> bool {
        self == o.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_paths_read_back_compare_and_look_up_as_str() {
        let long = "/a/path/longer/than/twenty-three/bytes";
        for p in ["", "/", "/chat", "/exactly/23-bytes-long!", long, "/ßπ€"] {
            let t = Tag::from(p);
            assert_eq!(t, p);
            assert_eq!(&*t, p);
            assert_eq!(t.clone(), Tag::from(p.to_string()));
            assert_eq!(t, Tag::from(Arc::<str>::from(p)));
            assert_eq!(t, Tag::from(Cow::Borrowed(p)));
            let (arc, owned): (Arc<str>, String) = (Arc::from(p), p.to_string());
            assert_eq!(t, arc);
            assert_eq!(arc, t);
            assert_eq!(t, owned);
            assert_eq!(owned, t);
            assert_eq!(p, t);
            assert_eq!(*p, t);
            assert_eq!(t, *p);
            assert_eq!(String::from(t.clone()), p);
            assert_eq!(format!("{t}|{t:?}"), format!("{p}|{p:?}"));
            let mut m = HashMap::new();
            m.insert(t, 1);
            assert_eq!(m.get(p), Some(&1));
        }
    }
}
