//! The NumPy and PyTorch primitives diffusers' schedulers compute their tables with, reproduced
//! with the same rounding (see the parent module): `torch.linspace`, `np.linspace`, `np.arange`,
//! `np.interp`, `np.round`, and the `torch.linalg.solve` of `scheduling_unipc_multistep.py`.

use prompt_diffusion_core::{Error, Result};

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f32;
            let half = steps / 2;
            (0..steps)
                .map(|i| {
                    if i < half {
                        step.mul_add(i as f32, start)
                    } else {
                        (-step).mul_add((steps - 1 - i) as f32, end)
                    }
                })
                .collect()
        }
    }
}

/// `np.linspace(start, stop, num)` (float64, endpoint included).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// `np.arange(start, stop, step)` for float64 (NumPy fills `start + i·(x₁ − start)`).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)` for one point, with NumPy's formula.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= (n - 1) as f64 {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = (y1 - y0) / 1.0;
    let y = slope * (x - j as f64) + y0;
    if y.is_nan() {
        let y = slope * (x - (j + 1) as f64) + y1;
        if y.is_nan() && y0 == y1 {
            return y0;
        }
        return y;
    }
    y
}

/// Round half to even (`np.round`).
pub(crate) fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// `torch.linalg.solve` for the tiny float32 systems of UniPC (LU with partial pivoting).
pub(crate) fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Result<Vec<f32>> {
    let n = b.len();
    let singular = || {
        Error::invalid_input(
            "UniPC step",
            "the order-conditions matrix is singular (a zero-length log-SNR step)",
        )
    };
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .ok_or_else(singular)?;
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return Err(singular());
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let inv = 1.0 / a[col][col];
        let (pivot_row, pivot_b) = (a[col].clone(), b[col]);
        for (row, b_row) in a[col + 1..].iter_mut().zip(&mut b[col + 1..]) {
            let l = row[col] * inv;
            for (x, p) in row[col + 1..].iter_mut().zip(&pivot_row[col + 1..]) {
                *x -= l * p;
            }
            *b_row -= l * pivot_b;
        }
    }
    for row in (0..n).rev() {
        let mut acc = b[row];
        for (x, bc) in a[row][row + 1..].iter().zip(&b[row + 1..]) {
            acc -= x * bc;
        }
        b[row] = acc / a[row][row];
    }
    if b.iter().all(|v| v.is_finite()) {
        Ok(b)
    } else {
        Err(singular())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{index_for_timestep, trailing_desc};

    #[test]
    fn numpy_primitives() {
        assert_eq!(np_linspace(0.0, 999.0, 3), vec![0.0, 499.5, 999.0]);
        assert_eq!(round_even(499.5), 500.0);
        assert_eq!(round_even(498.5), 498.0);
        assert_eq!(
            trailing_desc(1000.0, 1000.0 / 3.0),
            vec![999.0, 666.0, 332.0]
        );
        assert_eq!(np_interp(1.5, &[1.0, 2.0, 4.0]), 3.0);
        assert_eq!(np_interp(2.0, &[1.0, 2.0, 4.0]), 4.0);
        assert_eq!(index_for_timestep(&[5.0, 3.0, 3.0, 1.0], 3.0), Some(2));
        assert_eq!(index_for_timestep(&[5.0, 3.0], 4.0), None);
    }

    #[test]
    fn solve_uses_partial_pivoting() {
        let x = solve(vec![vec![0.0, 1.0], vec![2.0, 1.0]], vec![1.0, 3.0]).unwrap();
        assert_eq!(x, vec![1.0, 1.0]);
        assert!(solve(vec![vec![1.0, 1.0], vec![1.0, 1.0]], vec![1.0, 2.0]).is_err());
    }
}
