"""Hand-made shelf layouts shared by the audit rule tests (tests/test_audit_rules.py,
tests/test_audit_row_ends.py)."""

from __future__ import annotations

NAMES = ["cola", "chips", "tea"]


def positions_row(spec, *, skip=(), base=300.0, h=100.0, s=4.0):
    """One shelf laid out from planogram positions ``spec`` [(label, facings, width, spacing
    after the position)]: facings ``s`` apart; the (position, facing) pairs in ``skip`` are
    left empty. Returns boxes, labels and the planogram rows for :func:`build_planogram`."""
    boxes, labels, plan, x = [], [], [], 0.0
    for k, (lab, n, w, after) in enumerate(spec):
        plan.append((k + 1, {"shelf": 0, "position": k, "product": NAMES[lab], "facings": n}))
        for f in range(n):
            if (k, f) not in skip:
                boxes.append([x, base - h, x + w, base])
                labels.append(lab)
            x += w + s
        x += after - s
    return boxes, labels, plan
