rule prepare_model:
    """Make one model loadable offline: dequantise an embedded GGUF into safetensors, or
    fetch a hub model into the Hugging Face cache (run where the hub is reachable)."""
    output:
        record="results/models/{model}/model.json",
    log:
        "logs/{model}/prepare_model.log",
    conda:
        "../../envs/saesteer.yaml"
    params:
        # prompt_format does not change the prepared model: left out, so that changing it
        # reruns only the jobs that prompt (params are a rerun trigger).
        spec=lambda wildcards: {
            k: v for k, v in model_entry(wildcards).items() if k != "prompt_format"
        },
        weights_dir=lambda wildcards: f"results/models/{wildcards.model}/hf",
    script:
        "../scripts/prepare_model.py"
