//! Rendering a model's own Jinja chat template (minijinja), and finding the text that ends an
//! assistant answer (e.g. `<|im_end|>`), which every candidate label is scored with.

use anyhow::{bail, Context, Result};
use minijinja::{context, Environment, Error, ErrorKind};

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const MARK: &str = "\u{1}ANSWER\u{1}";

impl ChatTemplate {
    pub fn new(
        template: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", template.to_string())
            .context("the model's chat template (tokenizer.chat_template) is not valid Jinja")?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        })
    }

    fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| context! { role, content })
            .collect();
        self.env
            .get_template("chat")?
            .render(context! {
                messages,
                add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .context("cannot render the model's chat template")
    }

    /// The prompt for one user message, ending where the assistant's answer starts.
    pub fn prompt(&self, user: &str) -> Result<String> {
        self.render(&[("user", user)], true)
    }

    /// The text the template writes right after an assistant answer (e.g. `<|im_end|>\n`).
    pub fn answer_suffix(&self) -> Result<String> {
        let prompt = self.prompt("hello")?;
        let full = self.render(&[("user", "hello"), ("assistant", MARK)], false)?;
        let Some(rest) = full.strip_prefix(&prompt) else {
            bail!("the chat template renders an answer that does not continue its generation prompt; use --no-chat-template")
        };
        let Some(at) = rest.find(MARK) else {
            bail!("the chat template drops the assistant's answer; use --no-chat-template")
        };
        if !rest[..at].trim().is_empty() {
            bail!(
                "the chat template adds text before the assistant's answer; use --no-chat-template"
            )
        }
        Ok(rest[at + MARK.len()..].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_prompt_and_answer_suffix() {
        let t = ChatTemplate::new(CHATML, None, None).unwrap();
        assert_eq!(
            t.prompt("Label this").unwrap(),
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nLabel this<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.answer_suffix().unwrap(), "<|im_end|>\n");
    }

    #[test]
    fn broken_template_is_a_clear_error() {
        let err = ChatTemplate::new("{% for %}", None, None).err().unwrap();
        assert!(format!("{err:#}").contains("chat template"));
    }
}
