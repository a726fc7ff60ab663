"""bert-tasks: fine-tune, evaluate and predict with our own BERT on GLUE, CoNLL NER and SQuAD."""
