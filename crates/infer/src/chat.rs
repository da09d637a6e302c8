//! Chat templates (`tokenizer.chat_template`, Jinja) rendered with minijinja, with Python string
//! methods (`.strip()`, `.split()`...) from minijinja-contrib's pycompat, as Hugging Face renders
//! them.

use serde::Serialize;

use crate::error::{InferError, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// Render `template` for `messages`, with `add_generation_prompt`, `bos_token` and `eos_token`
/// set as transformers' `apply_chat_template` does.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| InferError::Template(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| InferError::Template(e.to_string()))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| InferError::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let out = render(
            SMOLLM2,
            &[Message::new("user", "What is the capital of France?")],
            true,
            "<|im_start|>",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        let sys = render(
            SMOLLM2,
            &[
                Message::new("system", "Be brief."),
                Message::new("user", "Hi"),
            ],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            sys,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn python_string_methods_and_tokens() {
        // Llama-3 style: bos_token, .strip(), raise_exception
        let t = "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}<|{{ m['role'] }}|>{{ m['content'] | trim }}{{ m.content.strip().upper() }}{{ eos_token }}{% endfor %}";
        let out = render(t, &[Message::new("user", "  hi  ")], true, "<s>", "</s>").unwrap();
        assert_eq!(out, "<s><|user|>hiHI</s>");
        let err = render(t, &[Message::new("tool", "x")], true, "<s>", "</s>").unwrap_err();
        assert!(err.to_string().contains("bad role"), "{err}");
        let err = render("{% for %}", &[], true, "", "").unwrap_err();
        assert!(err.to_string().starts_with("chat template:"), "{err}");
    }
}
