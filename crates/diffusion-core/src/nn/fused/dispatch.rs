//! Routing a call to a CubeCL kernel: recognising the backend's float primitive at run time and
//! launching the kernel directly or as a custom operation of burn-fusion.

use std::any::{Any, TypeId};
use std::fmt::Debug;
use std::marker::PhantomData;

use burn::tensor::{DType, Shape};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use burn_fusion::FusionTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr, TensorStatus};

/// A kernel with float tensor inputs and one float output, launchable on any CubeCL runtime.
///
/// The value carries the kernel's scalar parameters; the fusion stream keeps one value per
/// queued call, so parameters may differ from call to call.
pub(super) trait CubeOp: Clone + Debug + Send + Sync + 'static {
    /// Identifier of the custom fusion operation.
    const ID: &'static str;

    /// Shape and dtype of the output, from the inputs' shapes and dtypes.
    fn output(&self, inputs: &[(Shape, DType)]) -> (Shape, DType);

    /// Launches the kernel on resolved tensors.
    fn launch<R: CubeRuntime>(&self, inputs: Vec<CubeTensor<R>>) -> CubeTensor<R>;
}

/// Whether `P` is the float primitive of a backend the kernels run on.
pub(super) fn supported_primitive<P: 'static>() -> bool {
    let id = TypeId::of::<P>();
    #[cfg(feature = "wgpu")]
    if runtime_primitive::<burn_wgpu::WgpuRuntime>(id) {
        return true;
    }
    #[cfg(feature = "cuda")]
    if runtime_primitive::<cubecl::cuda::CudaRuntime>(id) {
        return true;
    }
    let _ = id;
    false
}

/// Whether `id` is `R`'s plain or fusion-wrapped float primitive.
#[allow(dead_code)]
fn runtime_primitive<R: CubeRuntime>(id: TypeId) -> bool {
    id == TypeId::of::<CubeTensor<R>>() || id == TypeId::of::<FusionTensor<FusionCubeRuntime<R>>>()
}

/// Runs `op` when `P` is a supported primitive; gives the inputs back otherwise.
pub(super) fn run<P: 'static, Op: CubeOp>(op: &Op, inputs: Vec<P>) -> Result<P, Vec<P>> {
    #[cfg(feature = "wgpu")]
    let inputs = match run_on::<burn_wgpu::WgpuRuntime, P, Op>(op, inputs) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let inputs = match run_on::<cubecl::cuda::CudaRuntime, P, Op>(op, inputs) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    let _ = op;
    Err(inputs)
}

/// `op` on runtime `R`, when `P` is one of its primitives.
#[allow(dead_code)]
fn run_on<R: CubeRuntime, P: 'static, Op: CubeOp>(op: &Op, inputs: Vec<P>) -> Result<P, Vec<P>> {
    if TypeId::of::<P>() == TypeId::of::<CubeTensor<R>>() {
        let out = op.launch::<R>(inputs.into_iter().map(cast).collect());
        return Ok(cast(out));
    }
    if TypeId::of::<P>() == TypeId::of::<FusionTensor<FusionCubeRuntime<R>>>() {
        let out = register_fused::<R, Op>(op, inputs.into_iter().map(cast).collect());
        return Ok(cast(out));
    }
    Err(inputs)
}

/// Moves `value` into the type `U`, which the caller has checked to be `T` itself.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("the caller compared the type ids")
}

/// Queues `op` as a custom operation of the fusion stream: pending fused work on the inputs is
/// flushed first, and the inputs are resolved to CubeCL tensors when the stream executes it.
fn register_fused<R: CubeRuntime, Op: CubeOp>(
    op: &Op,
    inputs: Vec<FusionTensor<FusionCubeRuntime<R>>>,
) -> FusionTensor<FusionCubeRuntime<R>> {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let meta: Vec<_> = inputs.iter().map(|t| (t.shape.clone(), t.dtype)).collect();
    let (shape, dtype) = op.output(&meta);
    let out = TensorIr {
        id: client.create_empty_handle(),
        shape,
        status: TensorStatus::NotInit,
        dtype,
    };
    let irs: Vec<_> = inputs.into_iter().map(FusionTensor::into_ir).collect();
    let desc = CustomOpIr::new(Op::ID, &irs, &[out]);
    let fused = Fused::<R, Op> {
        desc: desc.clone(),
        op: op.clone(),
        _runtime: PhantomData,
    };
    client
        .register(streams, OperationIr::Custom(desc), fused)
        .pop()
        .expect("the operation declares one output")
}

/// A [`CubeOp`] queued in the fusion stream.
#[derive(Debug)]
struct Fused<R: CubeRuntime, Op> {
    desc: CustomOpIr,
    op: Op,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: CubeRuntime, Op: CubeOp> Operation<FusionCubeRuntime<R>> for Fused<R, Op> {
    fn execute(
        &self,
        handles: &mut HandleContainer<
            <FusionCubeRuntime<R> as burn_fusion::FusionRuntime>::FusionHandle,
        >,
    ) {
        // The element types of `CubeBackend` only matter for its defaults; the tensors carry
        // their own dtype.
        type Cube<R> = CubeBackend<R, f32, i32, u8>;
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|ir| handles.get_float_tensor::<Cube<R>>(ir))
            .collect();
        let output = self.op.launch::<R>(inputs);
        handles.register_float_tensor::<Cube<R>>(&self.desc.outputs[0].id, output);
    }
}
