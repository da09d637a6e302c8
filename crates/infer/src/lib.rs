//! Inference: quantized matmul kernels and the Llama runtime.
