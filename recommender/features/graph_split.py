"""An OpenVINO model cut in two at a tensor every path goes through, so each half can run at its own precision.

``openvino-mixed`` runs the first half of the image network in float32 and the second in bfloat16: the early,
high-resolution layers are where bfloat16's rounding costs the most (cut at a quarter, half or three quarters,
bfloat16 before float32 stays 1.4-2.5e-4 from float32's vectors, bfloat16 throughout 2.9e-4; float32 before
bfloat16 8.8e-5 at half, 139 img/s against 106 for float32 throughout; docs/evaluation.md, "Mixed precision").
OpenVINO's own per-node marks (``disable_fp16_compression`` in a node's rt_info) do not survive the CPU
plugin's fusions, hence two compiled models.
"""

from __future__ import annotations

__all__ = ["clean_cuts", "split_model"]


def clean_cuts(model) -> list[int]:
    """Positions in ``model.get_ordered_ops()`` of the 4-d float32 outputs through which every path from the
    input to the outputs passes: no earlier operation (constants aside) is read after that one."""
    import openvino as ov

    ops = model.get_ordered_ops()
    position = {op.get_name(): i for i, op in enumerate(ops)}
    last_read = list(range(len(ops)))
    for j, op in enumerate(ops):
        for port in op.inputs():
            i = position[port.get_source_output().get_node().get_name()]
            last_read[i] = max(last_read[i], j)
    cuts, reach = [], -1
    for i, op in enumerate(ops):
        inner = op.get_type_name() not in ("Parameter", "Constant") and op.get_output_size() == 1
        if (reach <= i < last_read[i] and inner and op.get_output_element_type(0) == ov.Type.f32
                and op.get_output_partial_shape(0).rank.get_length() == 4):
            cuts.append(i)
        if op.get_type_name() != "Constant":
            reach = max(reach, last_read[i])
    return cuts


def split_model(model, fraction: float = 0.5):
    """``(head, tail)``: ``head`` maps the inputs to the clean cut ``fraction`` of the way through the list of
    clean cuts; ``tail`` maps that tensor to the outputs. ``ValueError`` when the model has no clean cut."""
    import openvino as ov
    import openvino.opset13 as opset

    cuts = clean_cuts(model)
    if not cuts:
        raise ValueError("the model has no single tensor every path goes through")
    at = cuts[min(int(fraction * len(cuts)), len(cuts) - 1)]
    first, second = model.clone(), model.clone()  # the same graph: the same ordering, so the same position
    cut = first.get_ordered_ops()[at]
    head = ov.Model([opset.result(cut.output(0))], first.get_parameters(), "head")
    cut = second.get_ordered_ops()[at]
    middle = opset.parameter(cut.output(0).get_partial_shape(), cut.get_output_element_type(0), name="middle")
    for target in list(cut.output(0).get_target_inputs()):
        target.replace_source_output(middle.output(0))
    return head, ov.Model(second.get_results(), [middle], "tail")
