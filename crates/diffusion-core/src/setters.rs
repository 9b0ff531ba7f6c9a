//! [`setters!`](crate::setters): the `with_*` builder methods of option structs.

/// Writes builder methods that set one field each and return `self`, inside an `impl` block.
///
/// `with_steps(steps: usize);` sets `self.steps = steps`; `with_variant(variant: impl
/// Into<String>) = Some(variant.into());` sets `self.variant` to the expression, and
/// `with_seed(seed: u64) in generation;` sets `self.generation.seed` (an option struct that
/// embeds another). Doc comments before an entry document the method.
///
/// ```
/// #[derive(Default)]
/// pub struct Options {
///     steps: usize,
///     variant: Option<String>,
/// }
///
/// impl Options {
///     prompt_diffusion_core::setters! {
///         /// Sets the number of steps.
///         with_steps(steps: usize);
///         /// Prefers a weight-file variant.
///         with_variant(variant: impl Into<String>) = Some(variant.into());
///     }
/// }
///
/// let options = Options::default().with_steps(20).with_variant("fp16");
/// assert_eq!((options.steps, options.variant.as_deref()), (20, Some("fp16")));
///
/// #[derive(Default)]
/// pub struct Outer {
///     inner: Options,
/// }
///
/// impl Outer {
///     prompt_diffusion_core::setters! {
///         /// Sets the number of steps of the inner options.
///         with_steps(steps: usize) in inner;
///     }
/// }
///
/// assert_eq!(Outer::default().with_steps(3).inner.steps, 3);
/// ```
#[macro_export]
macro_rules! setters {
    ($(
        $(#[$doc:meta])*
        $name:ident($field:ident: $ty:ty) $(in $parent:ident)? $(= $value:expr)?;
    )*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, $field: $ty) -> Self {
                self $(.$parent)? .$field = $crate::setters!(@value $field $(, $value)?);
                self
            }
        )*
    };
    (@value $field:ident) => { $field };
    (@value $field:ident, $value:expr) => { $value };
}
