"""From zero labels to a few: zero-shot (:mod:`.zeroshot`), prototypes (:mod:`.prototypes`),
SetFit-style contrastive few-shot (:mod:`.contrastive`), and the label-budget ladder (:mod:`.ladder`)."""
