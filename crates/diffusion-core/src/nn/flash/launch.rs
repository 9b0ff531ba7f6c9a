//! Launching the kernel on CubeCL tensors, directly or as a custom operation of burn-fusion.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use burn_fusion::FusionTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr, TensorStatus};
use cubecl::prelude::*;

use super::kernel::flash_attention_kernel;

/// Units (query rows) per cube.
const UNITS_PER_CUBE: u32 = 64;
/// Keys per shared-memory tile, halved until two f32 tiles fit the device's shared memory.
const BLOCK_K: usize = 16;

/// Whether `P` is the float primitive of a backend the kernel runs on.
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

/// Runs the kernel when `P` is a supported primitive; gives the inputs back otherwise.
pub(super) fn run<P: 'static>(q: P, k: P, v: P) -> Result<P, (P, P, P)> {
    #[cfg(feature = "wgpu")]
    let (q, k, v) = match run_on::<burn_wgpu::WgpuRuntime, P>(q, k, v) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let (q, k, v) = match run_on::<cubecl::cuda::CudaRuntime, P>(q, k, v) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    Err((q, k, v))
}

/// The kernel on runtime `R`, when `P` is one of its primitives.
#[allow(dead_code)]
fn run_on<R: CubeRuntime, P: 'static>(q: P, k: P, v: P) -> Result<P, (P, P, P)> {
    if TypeId::of::<P>() == TypeId::of::<CubeTensor<R>>() {
        let out = flash_attention::<R>(cast(q), cast(k), cast(v));
        return Ok(cast(out));
    }
    if TypeId::of::<P>() == TypeId::of::<FusionTensor<FusionCubeRuntime<R>>>() {
        let out = register_fused::<R>(cast(q), cast(k), cast(v));
        return Ok(cast(out));
    }
    Err((q, k, v))
}

/// Moves `value` into the type `U`, which the caller has checked to be `T` itself.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .expect("the caller compared the type ids")
}

/// The identifier of the custom fusion operation.
const OP_ID: &str = "prompt_diffusion::flash_attention";

/// Queues the kernel as a custom operation of the fusion stream: the inputs are resolved to
/// CubeCL tensors when the stream executes it.
fn register_fused<R: CubeRuntime>(
    q: FusionTensor<FusionCubeRuntime<R>>,
    k: FusionTensor<FusionCubeRuntime<R>>,
    v: FusionTensor<FusionCubeRuntime<R>>,
) -> FusionTensor<FusionCubeRuntime<R>> {
    let client = q.client.clone();
    let streams = OperationStreams::with_inputs([&q, &k, &v]);
    let [batch, heads, seq_q, _] = q.shape.dims::<4>();
    let out = TensorIr {
        id: client.create_empty_handle(),
        shape: Shape::new([batch, heads, seq_q, v.shape[3]]),
        status: TensorStatus::NotInit,
        dtype: q.dtype,
    };
    let desc = CustomOpIr::new(OP_ID, &[q.into_ir(), k.into_ir(), v.into_ir()], &[out]);
    let op = FusedFlashAttention::<R> {
        desc: desc.clone(),
        _runtime: PhantomData,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .pop()
        .expect("the operation declares one output")
}

/// The custom fusion operation.
#[derive(Debug)]
struct FusedFlashAttention<R: CubeRuntime> {
    desc: CustomOpIr,
    _runtime: PhantomData<fn() -> R>,
}

impl<R: CubeRuntime> Operation<FusionCubeRuntime<R>> for FusedFlashAttention<R> {
    fn execute(
        &self,
        handles: &mut HandleContainer<
            <FusionCubeRuntime<R> as burn_fusion::FusionRuntime>::FusionHandle,
        >,
    ) {
        // The element types of `CubeBackend` only matter for its defaults; the tensors carry
        // their own dtype.
        type Cube<R> = CubeBackend<R, f32, i32, u8>;
        let ([q, k, v], [out]) = self.desc.as_fixed::<3, 1>();
        let q = handles.get_float_tensor::<Cube<R>>(q);
        let k = handles.get_float_tensor::<Cube<R>>(k);
        let v = handles.get_float_tensor::<Cube<R>>(v);
        let output = flash_attention::<R>(q, k, v);
        handles.register_float_tensor::<Cube<R>>(&out.id, output);
    }
}

/// Launches the kernel on `[batch, heads, seq, head_dim]` tensors. Strided views are read in
/// place (only a head dimension with a stride other than 1 is copied first); the output is a
/// `[batch, heads, seq, head_dim]` view of a contiguous `[batch, seq, heads, head_dim]` buffer,
/// the layout attention layers merge the heads from without a copy.
pub(super) fn flash_attention<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
) -> CubeTensor<R> {
    let [q, k, v] = [q, k, v].map(rows_contiguous);
    let [batch, heads, seq_q, head_dim] = q.shape().dims::<4>();
    let seq_k = k.shape()[2];
    let dtype = q.dtype;
    let client = q.client.clone();
    let mut out = empty_device_dtype::<R>(
        client.clone(),
        q.device.clone(),
        Shape::new([batch, seq_q, heads, head_dim]),
        dtype,
    );
    out.meta.swap(1, 2);

    let hardware = &client.properties().hardware;
    let units = UNITS_PER_CUBE
        .min(hardware.max_units_per_cube)
        .min(hardware.max_cube_dim.0);
    let mut block_k = BLOCK_K;
    while block_k > 1 && 2 * block_k * head_dim * size_of::<f32>() > hardware.max_shared_memory_size
    {
        block_k /= 2;
    }
    let cube_count = CubeCount::Static(
        seq_q.div_ceil(units as usize) as u32,
        (batch * heads) as u32,
        1,
    );
    flash_attention_kernel::launch::<R>(
        &client,
        cube_count,
        CubeDim::new_1d(units),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        seq_q as u32,
        seq_k as u32,
        (1.0 / (head_dim as f64).sqrt()) as f32,
        head_dim,
        block_k,
        float_storage(dtype),
    );
    out
}

/// `tensor` itself when its last dimension is contiguous, else a contiguous copy.
fn rows_contiguous<R: CubeRuntime>(tensor: CubeTensor<R>) -> CubeTensor<R> {
    let rows = tensor.meta.strides()[3] == 1 || tensor.meta.shape()[3] == 1;
    if rows {
        tensor
    } else {
        into_contiguous(tensor)
    }
}

/// The kernel's element type for a float dtype the dispatcher admitted.
fn float_storage(dtype: DType) -> StorageType {
    dtype.into()
}
