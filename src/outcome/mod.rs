//! What a request comes to, as the client and the operator see it: a
//! refusal (`denial`) in MLflow's error format (`reply`), the filter's own
//! answer to who a key is (`whoami`), and the audit line (`audit`).

pub mod audit;
pub mod denial;
pub mod reply;
pub mod whoami;
