"""Policy inference behind one small interface: ONNX Runtime, TensorRT."""
