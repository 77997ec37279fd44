"""See what the classifier looks at: per-layer maps of every face (activation, CAM, Grad-CAM) captured with hooks
that never outlive their use, on a stable scale, smoothed per tracked face, with statistics for the log.

options: the [explain] section (kept light: config.py imports it); hooks: capture(); modes: the map methods;
normalise: running per-layer scale, per-track smoothing; maps: FaceMaps, upsampling, colours; stats: numbers per
map and landmark regions; explainer: the analysis-thread side; figure, faithfulness, timing: `emocam explain`.
"""
