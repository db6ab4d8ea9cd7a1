//! A minimal Dockerfile reader: instructions with continuation lines joined, split into stages.
//!
//! Why not a crate: the one parser on crates.io (`dockerfile-parser`) pins dependencies years old
//! (snafu 0.6, edition 2018) and sees few releases; hadolint, which the tests run anyway, lints
//! but does not say what the file contains. Our Dockerfile uses no parser directive, heredoc or
//! escape other than `\` at a line's end, and this reads exactly that much.

use std::path::Path;

/// One instruction: its keyword in capitals, and the rest of it on one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

impl Instruction {
    /// For COPY and ADD: (the `--flags`, the sources, the destination).
    pub fn copy_parts(&self) -> (Vec<&str>, Vec<&str>, &str) {
        let words: Vec<&str> = self.args.split_whitespace().collect();
        let (flags, paths): (Vec<&str>, Vec<&str>) =
            words.into_iter().partition(|w| w.starts_with("--"));
        let (destination, sources) = paths
            .split_last()
            .unwrap_or_else(|| panic!("{} without paths", self.keyword));
        (flags, sources.to_vec(), destination)
    }
}

/// A Dockerfile's instructions, in order.
#[derive(Debug)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
}

impl Dockerfile {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        Self::parse(&text)
    }

    /// Comments and empty lines dropped (inside a continued instruction too, as Docker does),
    /// lines ending in `\` joined with the next.
    pub fn parse(text: &str) -> Self {
        let mut lines: Vec<String> = Vec::new();
        let mut continued = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            let (body, more) = match trimmed.strip_suffix('\\') {
                Some(body) => (body.trim(), true),
                None => (trimmed, false),
            };
            match lines.last_mut() {
                Some(last) if continued => {
                    last.push(' ');
                    last.push_str(body);
                }
                _ => lines.push(body.to_owned()),
            }
            continued = more;
        }
        let instructions = lines
            .iter()
            .map(|line| {
                let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                }
            })
            .collect();
        Self { instructions }
    }

    /// The stages: each from its FROM to the next.
    pub fn stages(&self) -> Vec<&[Instruction]> {
        let starts: Vec<usize> = (0..self.instructions.len())
            .filter(|&n| self.instructions[n].keyword == "FROM")
            .collect();
        starts
            .iter()
            .zip(starts.iter().skip(1).chain([&self.instructions.len()]))
            .map(|(&a, &b)| &self.instructions[a..b])
            .collect()
    }

    /// What the build copies in from the build context: the sources of every COPY and ADD that
    /// takes no `--from` (another stage or image).
    pub fn context_sources(&self) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
            .map(Instruction::copy_parts)
            .filter(|(flags, _, _)| !flags.iter().any(|f| f.starts_with("--from")))
            .flat_map(|(_, sources, _)| sources)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_instructions_stages_and_copies() {
        let file = Dockerfile::parse(
            "# comment\nFROM rust AS build\nCOPY a b ./\nRUN one \\\n    # inside\n\n    && two\n\
             from scratch\ncopy --from=build /out/x /x\nUSER 1:1\n",
        );
        let keywords: Vec<&str> = file
            .instructions
            .iter()
            .map(|i| i.keyword.as_str())
            .collect();
        assert_eq!(keywords, ["FROM", "COPY", "RUN", "FROM", "COPY", "USER"]);
        assert_eq!(file.instructions[2].args, "one && two");
        assert_eq!(file.stages().len(), 2);
        assert_eq!(file.stages()[1].len(), 3);
        assert_eq!(file.context_sources(), ["a", "b"]);
        assert_eq!(
            file.instructions[4].copy_parts(),
            (vec!["--from=build"], vec!["/out/x"], "/x")
        );
    }
}
