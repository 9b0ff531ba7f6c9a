//! Closed sets of named values (schedulers, tasks, flows, backends, …): their names print and
//! parse the same way everywhere, and a wrong name is an error that lists the right ones.

use crate::{Error, Result};

/// The value of `all` whose `name` is `text`, ignoring ASCII case and surrounding white space.
///
/// # Errors
/// [`Error::InvalidInput`] naming `what` (`"scheduler"`) and listing every name.
pub fn parse_name<T: Copy>(
    text: &str,
    what: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T> {
    let wanted = text.trim();
    let found = all
        .iter()
        .copied()
        .find(|&v| name(v).eq_ignore_ascii_case(wanted));
    found.ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        Error::invalid_input(what, format!("`{text}` is not one of {}", names.join(", ")))
    })
}

/// Implements `Display` (the value's name, padded as the format asks) and `FromStr`
/// ([`parse_name`](crate::names::parse_name)) for a `Copy` enum with an inherent
/// `const ALL: [Self; N]` and `fn name(self) -> &'static str`; the literal names the value in
/// errors.
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// enum Fruit {
///     Apple,
///     Pear,
/// }
///
/// impl Fruit {
///     const ALL: [Fruit; 2] = [Fruit::Apple, Fruit::Pear];
///
///     fn name(self) -> &'static str {
///         match self {
///             Fruit::Apple => "apple",
///             Fruit::Pear => "pear",
///         }
///     }
/// }
///
/// prompt_diffusion_core::named_values!(Fruit: "fruit");
///
/// assert_eq!("Pear".parse::<Fruit>().unwrap(), Fruit::Pear);
/// assert_eq!(format!("[{:>6}]", Fruit::Apple), "[ apple]");
/// let err = "plum".parse::<Fruit>().unwrap_err().to_string();
/// assert!(err.contains("`plum` is not one of apple, pear"), "{err}");
/// ```
#[macro_export]
macro_rules! named_values {
    ($($ty:ty: $what:literal),+ $(,)?) => {
        $(
            impl ::std::fmt::Display for $ty {
                fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                    f.pad(self.name())
                }
            }

            impl ::std::str::FromStr for $ty {
                type Err = $crate::Error;

                #[doc = concat!("Parses a ", $what, " name (ASCII case ignored).")]
                ///
                /// # Errors
                /// [`Error::InvalidInput`](prompt_diffusion_core::Error::InvalidInput) listing
                /// the names.
                fn from_str(text: &str) -> $crate::Result<Self> {
                    $crate::names::parse_name(text, $what, &<$ty>::ALL, <$ty>::name)
                }
            }
        )+
    };
}
